"""The training loop: strategies, learning rates, caching, resume, class balance, auto choice.

A randomly initialised MobileNetV3-Small (56 M MACs, no weights needed) keeps these fast; what is
tested is the mechanics, not accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from edgetl.backbones import get_backbone
from edgetl.epochs import auto_epochs, describe_sizes, progressive_sizes
from edgetl.profile import FinetuneConfig
from edgetl.training.auto import decide, fit_linear_probe, sign_test_p, stratified_folds
from edgetl.training.datasets import ImageListDataset, ResizingSchedule, eval_transform, train_transform
from edgetl.training.strategies import make_strategy
from edgetl.training.trainer import Trainer, _param_groups
from tests.helpers import make_dataset

SPEC = get_backbone("mobilenet_v3_small")
PRE = SPEC.pretrained.preprocessing


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = make_dataset(tmp_path_factory.mktemp("train") / "d", train=6, val=2)
    paths = sorted((root / "train").rglob("*.jpg"))
    labels = [0 if p.parent.name == "blues" else 1 for p in paths]
    holdout_paths = sorted((root / "val").rglob("*.jpg"))
    holdout = (
        torch.from_numpy(PRE.batch(holdout_paths)),
        torch.tensor([0 if p.parent.name == "blues" else 1 for p in holdout_paths]),
    )
    return {"paths": paths, "labels": labels, "holdout": holdout}


def config(**overrides) -> FinetuneConfig:
    base = {"epochs": 3, "batch_size": 4, "lr": 0.01, "threads": 1, "early_stopping": {"patience": None}}
    return FinetuneConfig.model_validate(base | overrides)


def trainer(data: dict, cfg: FinetuneConfig, strategy: str, work_dir: Path | None = None, **kwargs) -> Trainer:
    torch.manual_seed(0)
    built = SPEC.build(num_classes=2, pretrained=False)
    transform = train_transform(PRE, cfg.augmentation) if cfg.augmentation.enabled else eval_transform(PRE)
    dataset = ImageListDataset(data["paths"], data["labels"], transform, preload_side=PRE.resize)
    return Trainer(
        built,
        make_strategy(strategy, cfg, len(built.groups)),
        cfg,
        dataset,
        data["labels"],
        data["holdout"],
        seed=0,
        log=lambda m: None,
        work_dir=work_dir,
        **kwargs,
    )


def test_strategy_schedules() -> None:
    cfg = config(unfreeze_blocks=3, gradual={"every_epochs": 2, "blocks_per_step": 2, "max_blocks": 5})
    assert [make_strategy("feature_extract", cfg, 10).trainable_blocks(e) for e in (1, 5)] == [0, 0]
    assert make_strategy("partial", cfg, 10).trainable_blocks(1) == 3
    assert [make_strategy("gradual", cfg, 10).trainable_blocks(e) for e in range(1, 9)] == [0, 0, 2, 2, 4, 4, 5, 5]
    assert make_strategy("full", cfg, 10).trainable_blocks(1) == 10
    scratch = make_strategy("scratch", cfg, 10)
    assert not scratch.pretrained and not scratch.discriminative_lr and scratch.trainable_blocks(1) == 10


def test_discriminative_learning_rates_and_no_decay_on_norms() -> None:
    built = SPEC.build(num_classes=2, pretrained=False)
    cfg = config(lr=0.01, backbone_lr_ratio=0.1, weight_decay=0.05)
    groups = _param_groups(built, make_strategy("full", cfg, len(built.groups)), cfg)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert by_param[id(built.head.weight)]["lr"] == 0.01 and by_param[id(built.head.weight)]["weight_decay"] == 0.05
    assert by_param[id(built.head.bias)]["weight_decay"] == 0.0
    stem = built.groups[0][0]  # Conv2dNormActivation: conv, BatchNorm, activation
    conv, norm = stem[0], stem[1]
    assert by_param[id(conv.weight)]["lr"] == pytest.approx(0.001)
    assert by_param[id(norm.weight)]["weight_decay"] == 0.0
    scratch = _param_groups(built, make_strategy("scratch", cfg, len(built.groups)), cfg)
    assert {g["lr"] for g in scratch} == {0.01}


def test_partial_trains_only_the_top_blocks_and_keeps_bn_statistics(data: dict) -> None:
    cfg = config(epochs=1, unfreeze_blocks=2, freeze_batchnorm=True)
    run = trainer(data, cfg, "partial")
    before = {name: p.detach().clone() for name, p in run.built.model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in run.built.model.named_buffers() if "running" in name}
    outcome = run.fit()
    top = {id(p) for group in run.built.groups[-2:] for m in group for p in m.parameters()}
    norms = {id(p) for m in run.built.model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    for name, parameter in run.built.model.named_parameters():
        changed = not torch.equal(before[name], parameter)
        expected = (id(parameter) in top and id(parameter) not in norms) or name.startswith("head")
        assert changed == expected, name
    for name, buffer in run.built.model.named_buffers():
        if name in buffers:
            assert torch.equal(buffers[name], buffer), f"BatchNorm statistics moved: {name}"
    assert outcome.history[0].trainable_blocks == 2


def test_gradual_unfreezes_on_schedule(data: dict) -> None:
    cfg = config(epochs=4, gradual={"every_epochs": 1, "blocks_per_step": 1})
    outcome = trainer(data, cfg, "gradual").fit()
    assert [r.trainable_blocks for r in outcome.history] == [0, 1, 2, 3]


def test_cached_features_train_the_same_head_as_running_the_backbone(data: dict) -> None:
    cfg = config(epochs=3, augmentation={"enabled": False}, head_dropout=0.0)
    cached = trainer(data, cfg, "feature_extract")
    assert cached.cache_features
    cached_outcome = cached.fit()
    uncached = trainer(data, cfg.model_copy(update={"cache_features": False}), "feature_extract")
    assert not uncached.cache_features
    uncached_outcome = uncached.fit()
    torch.testing.assert_close(cached.built.head.weight, uncached.built.head.weight, atol=1e-5, rtol=1e-4)
    for a, b in zip(cached_outcome.history, uncached_outcome.history, strict=True):
        assert a.holdout_loss == pytest.approx(b.holdout_loss, abs=1e-5)


def test_interrupted_training_resumes_to_the_same_result(data: dict, tmp_path: Path) -> None:
    cfg = config(epochs=4, head_dropout=0.2, unfreeze_blocks=1)  # augmentation + dropout: RNG must be restored
    reference = trainer(data, cfg, "partial", work_dir=tmp_path / "a")
    reference_outcome = reference.fit()

    def interrupt_after_two(record) -> None:
        if record.epoch == 2:
            raise KeyboardInterrupt

    interrupted = trainer(data, cfg, "partial", work_dir=tmp_path / "b", on_epoch_end=interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert (tmp_path / "b" / "last.pt").is_file()
    resumed = trainer(data, cfg, "partial", work_dir=tmp_path / "b")
    outcome = resumed.fit(resume=True)
    assert outcome.resumed_from_epoch == 3
    assert [r.train_loss for r in outcome.history] == pytest.approx([r.train_loss for r in reference_outcome.history])
    resumed_state = resumed.built.model.state_dict()
    for name, tensor in reference.built.model.state_dict().items():
        torch.testing.assert_close(tensor, resumed_state[name], msg=name)


def test_without_resume_an_old_checkpoint_is_ignored(data: dict, tmp_path: Path) -> None:
    cfg = config(epochs=2)
    first = trainer(data, cfg, "feature_extract", work_dir=tmp_path)
    first.fit()
    messages: list[str] = []
    again = trainer(data, cfg, "feature_extract", work_dir=tmp_path)
    again.log = messages.append
    assert again.fit().resumed_from_epoch == 0
    assert any("pass --resume" in m for m in messages)


def test_class_balance_options_run(data: dict) -> None:
    imbalanced = dict(data)
    imbalanced["paths"] = data["paths"][:8]  # 6 blues, 2 reds
    imbalanced["labels"] = data["labels"][:8]
    for mode in ("weighted_loss", "sampler"):
        run = trainer(imbalanced, config(epochs=1, class_balance=mode), "feature_extract")
        if mode == "weighted_loss":
            weights = run._class_weights()
            assert weights is not None and weights[1] > weights[0]
        assert len(run.fit().history) == 1


def test_early_stopping_restores_the_best_epoch(data: dict) -> None:
    cfg = config(epochs=6, lr=0.5, early_stopping={"patience": 1, "monitor": "holdout_loss"})
    outcome = trainer(data, cfg, "feature_extract").fit()
    best = min(outcome.history, key=lambda r: r.holdout_loss)
    assert outcome.best_epoch == best.epoch
    if len(outcome.history) < 6:
        assert outcome.stopped_early


def test_without_early_stopping_the_final_weights_are_kept(data: dict) -> None:
    run = trainer(data, config(epochs=3, lr=0.5), "feature_extract")
    outcome = run.fit()
    assert outcome.best_epoch == 3 and not outcome.stopped_early
    # The model holds the last epoch's weights: its holdout accuracy is the last record's.
    run.built.model.eval()
    with torch.no_grad():
        logits = run.built.model(data["holdout"][0])
    accuracy = float((logits.argmax(1) == data["holdout"][1]).float().mean())
    assert accuracy == pytest.approx(outcome.history[-1].holdout_accuracy)


def _right(count: int, images: int, first: int = 0) -> torch.Tensor:
    """A holdout vector with `count` images right, starting at image `first` (wrapping)."""
    right = torch.zeros(images, dtype=torch.bool)
    right[[(first + i) % images for i in range(count)]] = True
    return right


def test_auto_does_not_flip_to_the_probe_on_a_small_holdout_difference() -> None:
    # The case that made the rule: 48 holdout images, the probe 36 right, the fine-tune 34 (disagreeing on 4 + 2).
    images = 48
    probe = _right(36, images)
    tuned = _right(34, images, first=4)
    strategy, reason, p = decide(probe, tuned)
    assert strategy == "full", reason
    assert p == pytest.approx(22 / 64)  # 4 of 6 disagreements for the probe: P(X >= 4 | 6, 1/2)
    assert "36" in reason and "34" in reason and "48 holdout images" in reason and "not clearly better" in reason
    # One image ahead, or a tie: still the fine-tune.
    assert decide(_right(35, images), _right(34, images))[0] == "full"
    assert decide(_right(34, images), _right(34, images))[0] == "full"


def test_auto_keeps_the_probe_only_on_clear_evidence() -> None:
    images = 60
    tuned = _right(40, images)
    probe = tuned | _right(6, images, first=40)  # right on 6 more images, wrong on none the fine-tune gets
    strategy, reason, p = decide(probe, tuned)
    assert strategy == "feature_extract" and p == pytest.approx(1 / 64) and "clearly better" in reason
    assert decide(None, None) == ("full", "no holdout images to compare on: the fine-tune is kept", None)


def test_sign_test() -> None:
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(5, 0) == pytest.approx(1 / 32)
    assert sign_test_p(3, 1) == pytest.approx(5 / 16)


def test_auto_epochs_follow_the_image_budget() -> None:
    assert auto_epochs(100) == 25 and auto_epochs(500) == 20 and auto_epochs(5000) == 8


def test_progressive_sizes_ramp_to_full_size_in_stride_steps() -> None:
    sizes = progressive_sizes(224, 25, 0.7, 0.6)
    assert sizes == [160] * 4 + [192] * 7 + [224] * 14  # the default schedule over 25 epochs
    assert describe_sizes(sizes) == "160 px (4 epochs), 192 px (7), 224 px (14)"
    assert sizes == sorted(sizes) and all(side % 32 == 0 for side in sizes)
    # Never below start_scale, always ends at the full side (even when it is not a multiple of 32).
    assert progressive_sizes(240, 10, 0.7, 0.6) == [192, 192, 192, 224, 224, 240, 240, 240, 240, 240]
    assert progressive_sizes(64, 8, 0.7, 0.6) == [64] * 8
    # Off: start_scale 1, a single epoch, or a ramp that ends at the first epoch.
    assert progressive_sizes(224, 10, 1.0, 0.6) == [224] * 10 and describe_sizes([224] * 10) == "224 px"
    assert progressive_sizes(224, 1, 0.7, 0.6) == [224] and progressive_sizes(224, 2, 0.7, 0.6) == [224, 224]


def test_resizing_schedule_gives_each_epoch_its_crop_side(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "a.jpg"
    Image.new("RGB", (300, 260), (40, 90, 200)).save(path)
    schedule = ResizingSchedule([64, 64, 96], lambda side: train_transform(PRE, FinetuneConfig().augmentation, side))
    dataset = ImageListDataset([path], [0], schedule.transform(3), preload_side=PRE.resize, schedule=schedule)
    assert [dataset[(0, epoch)][0].shape[-1] for epoch in (1, 2, 3, 9)] == [64, 64, 96, 96]
    assert dataset[0][0].shape[-1] == 96  # a plain index (no epoch) gets the final transform
    with pytest.raises(ValueError):
        ImageListDataset([path], [0], eval_transform(PRE), memoize=True, schedule=schedule)


def test_linear_probe_separates_separable_features_and_not_noise() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    separable = torch.randn(200, 16, generator=generator) * 2 + 5 + labels[:, None] * 3.0
    probe = fit_linear_probe(separable[:150], labels[:150], 2)
    assert probe.accuracy(separable[150:], labels[150:]) >= 0.95
    assert set(probe.cv_accuracy) == {1e-4, 1e-3, 1e-2, 1e-1} and probe.l2 in probe.cv_accuracy
    # The head works on raw features (standardization folded in), as a Linear layer would apply it.
    head = torch.nn.Linear(16, 2)
    with torch.no_grad():
        head.weight.copy_(probe.weight)
        head.bias.copy_(probe.bias)
    assert torch.allclose(head(separable), probe.logits(separable), atol=1e-4)
    noise = torch.randn(200, 16, generator=generator)
    assert fit_linear_probe(noise[:150], labels[:150], 2).accuracy(noise[150:], labels[150:]) <= 0.75


def test_stratified_folds_spread_every_class() -> None:
    labels = torch.tensor([0] * 10 + [1] * 5)
    folds = stratified_folds(labels, 5, seed=0)
    assert sorted(torch.cat(folds).tolist()) == list(range(15))
    assert all(int((labels[f] == 1).sum()) == 1 and int((labels[f] == 0).sum()) == 2 for f in folds)


def test_warmup_then_cosine_schedule(data: dict) -> None:
    cfg = config(epochs=3, lr=0.01, warmup_epochs=1)
    outcome = trainer(data, cfg, "feature_extract").fit()
    lrs = [r.lr for r in outcome.history]  # the head's lr after each epoch's last step (3 steps per epoch)
    # Warm-up reaches the full lr at the end of epoch 1; cosine then decays to zero over epochs 2-3.
    assert lrs == pytest.approx([0.01, 0.01 * 0.5 * (1 + math.cos(math.pi * 0.5)), 0.0], abs=1e-9)


def test_bf16_autocast_runs_on_cpu(data: dict) -> None:
    run = trainer(data, config(epochs=1, mixed_precision="bf16"), "partial")
    outcome = run.fit()
    assert outcome.mixed_precision == "bfloat16" and outcome.device == "cpu"
    assert all(p.dtype == torch.float32 for p in run.built.model.parameters()), "weights stay fp32 under autocast"


def test_linear_probe_head_has_no_outlier_weights_for_dead_features() -> None:
    """A feature that barely varies must not get a huge raw weight (it would wreck the row's int8 scale)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(120) % 3
    features = torch.randn(120, 32, generator=generator).abs() + labels[:, None].float()
    features[:, 5] = 1e-4 * torch.rand(120, generator=generator)  # a dead ReLU6 channel
    probe = fit_linear_probe(features, labels, 3)
    magnitude = probe.weight.abs()
    assert float(magnitude.max()) < 20 * float(magnitude.median())
    assert probe.accuracy(features, labels) >= 0.9


def test_auto_ships_the_probe_refitted_on_train_and_holdout_when_it_clearly_won() -> None:
    import copy
    from types import SimpleNamespace

    from edgetl.training.auto import settle_auto

    torch.manual_seed(0)
    built = SPEC.build(num_classes=2, pretrained=False)
    built.model.eval()
    head = next(name for name, module in built.model.named_modules() if module is built.head)
    holdout = (torch.randn(12, 3, 32, 32), torch.zeros(12, dtype=torch.long))
    with torch.no_grad():  # the probe predicts class 0 everywhere: all 12 right
        built.head.weight.zero_()
        built.head.bias.copy_(torch.tensor([5.0, -5.0]))
    probe_state = copy.deepcopy(built.model.state_dict())
    with torch.no_grad():  # what the fine-tune changed: class 1 everywhere, all wrong
        built.head.bias.copy_(torch.tensor([-50.0, 50.0]))
    outcome = SimpleNamespace(history=[SimpleNamespace(holdout_accuracy=0.0, holdout_loss=9.0)], seconds=2.0)
    auto = {"probe_holdout_accuracy": 1.0, "probe_holdout_loss": 0.1, "probe_l2": 1e-3, "probe_cv_accuracy": {},
            "holdout_images": 12, "probe_seconds": 0.1, "seed": 0}  # fmt: skip
    with torch.no_grad():
        train_features = built.features(torch.randn(8, 3, 32, 32))
        held_features = built.features(holdout[0])
    features = (train_features, torch.tensor([0, 1] * 4), held_features)
    ends = settle_auto(auto, outcome, built, probe_state, 3, 160, lambda message: None, holdout, features)
    assert set(ends) == {"probe", "finetune"} and torch.equal(
        ends["probe"][f"{head}.bias"], probe_state[f"{head}.bias"]
    )
    assert auto["strategy"] == "feature_extract", auto["reason"]
    assert auto["holdout_disagreements"] == {"probe_only": 12, "finetune_only": 0}
    assert auto["evidence_p"] == pytest.approx(0.5**12)
    assert auto["probe_refit_images"] == 20 and "refitted on train + holdout (20 images)" in auto["reason"]
    # The backbone is the probe's (frozen) one; only the head was refitted.
    state = built.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in probe_state.items() if not k.startswith(f"{head}."))
