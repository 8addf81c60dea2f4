"""The fine-tune, whole: backbone + new head trained on train, early-stopped on holdout, `auto` settled.

`finetune(profile, classes, train, holdout, run) -> FinetuneResult` builds the pretrained backbone,
initialises the head (ImageNet rows, a linear probe for `auto`, or random), trains with the profile's
strategy and resizing schedule, and for `auto` keeps the fine-tune unless the probe is clearly better
on the holdout (`edgetl.training.auto`). The fine-tune stage writes what it returns.
"""

from __future__ import annotations

import copy
import csv
import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetl.backbones.checkpoint import save_checkpoint
from edgetl.preprocessing import Preprocessing
from edgetl.profile import Profile
from edgetl.training.distributed import DistributedEnv


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass(frozen=True)
class FinetuneRun:
    """How this fine-tune runs: its scratch folder (resumable epochs), the processes, where progress goes."""

    work_dir: Path
    dist: DistributedEnv
    log: Callable[[str], None]
    resume: bool = False
    progress: bool = False
    on_epoch_end: Callable[[Any], None] | None = None


@dataclass
class FinetuneResult:
    model: Any  # the kept weights (torch.nn.Module)
    backbone: str
    classes: list[str]
    preprocessing: Preprocessing
    outcome: Any  # training.trainer.TrainOutcome: the history, best epoch, timings
    candidates: dict[str, dict[str, Any]]  # `auto`: both ends' state dicts, so the choice can be re-examined
    history: dict[str, Any]
    summary: dict[str, Any]

    def save(self, checkpoint: Path, candidates: dict[str, Path]) -> None:
        """The kept model to `checkpoint`; each `auto` candidate to its path in `candidates`."""
        kept = copy.deepcopy(self.model.state_dict())
        for name, state in self.candidates.items():
            self.model.load_state_dict(state)
            save_checkpoint(candidates[name], self.model, self.backbone, self.classes, self.preprocessing)
        self.model.load_state_dict(kept)
        best_epoch = self.outcome.best_epoch
        save_checkpoint(checkpoint, self.model, self.backbone, self.classes, self.preprocessing, best_epoch=best_epoch)


def finetune(
    profile: Profile,
    classes: list[str],
    train: tuple[list[Path], list[int]],
    holdout_split: tuple[list[Path], list[int]],
    run: FinetuneRun,
) -> FinetuneResult:
    """Train the profile's backbone on `train`, early-stopped on `holdout_split` (never val)."""
    import torch

    from edgetl.backbones.registry import get_backbone
    from edgetl.epochs import describe_sizes, planned_epochs, progressive_sizes
    from edgetl.training.auto import fit_probe, settle_auto
    from edgetl.training.datasets import ImageListDataset, ResizingSchedule, eval_transform, train_transform
    from edgetl.training.strategies import make_strategy
    from edgetl.training.trainer import Trainer, initialise_head

    cfg = profile.finetune
    seed_everything(profile.seed)  # augmentation and dropout are seeded per sample, not from here
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif run.dist.enabled:
        torch.set_num_threads(max(1, torch.get_num_threads() // run.dist.world_size))
    log = run.log if run.dist.is_main else (lambda m: None)
    spec = get_backbone(profile.backbone.name)
    pre = spec.preprocessing_at(profile.backbone.input_size)
    train_paths, train_labels = train
    holdout_paths, holdout_labels = holdout_split
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
        auto, probe_features = fit_probe(built, pre, train_paths, train_labels, holdout, profile.seed, log)
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
        + (f"; {run.dist.world_size} processes" if run.dist.enabled else "")
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
        progress=run.progress and run.dist.is_main,
        work_dir=run.work_dir,
        dist=run.dist,
        on_epoch_end=run.on_epoch_end,
    )
    run.dist.init(trainer.device)
    outcome = trainer.fit(resume=run.resume)
    outcome.head_init = head_init
    if auto is not None:
        candidates = settle_auto(
            auto, outcome, built, probe_state, trainer.epochs, train_size, log, holdout, probe_features
        )
        strategy_name = auto["strategy"]
    else:
        candidates = {}
    best = outcome.history[outcome.best_epoch - 1] if outcome.best_epoch else outcome.history[-1]
    summary = {
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
    history = outcome.to_dict() | ({"auto": auto} if auto else {})
    return FinetuneResult(
        model=built.model,
        backbone=spec.name,
        classes=list(classes),
        preprocessing=pre,
        outcome=outcome,
        candidates=candidates,
        history=history,
        summary=summary,
    )


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


def history_csv(outcome: Any) -> str:
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
