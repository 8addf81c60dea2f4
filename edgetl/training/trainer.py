"""The fine-tuning loop shared by every strategy.

One loop, parameterised by a `Strategy` (which blocks train in which epoch): discriminative
learning rates (pretrained blocks at lr * backbone_lr_ratio), linear warm-up then cosine decay,
optional BatchNorm freezing, label smoothing, class-balanced loss or sampling, mixed precision on
CUDA, early stopping on a holdout with the best epoch restored, a resumable checkpoint after every
epoch, and DistributedDataParallel under torchrun.

When the backbone stays frozen and augmentation is off, the backbone runs once over the training
set and the head trains on the cached features: each epoch then costs milliseconds.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgetl.backbones.base import BuiltBackbone, count_parameters
from edgetl.backbones.imagenet import match_imagenet_classes
from edgetl.epochs import planned_epochs
from edgetl.errors import ModelFileError, ProfileError
from edgetl.files import atomic_path
from edgetl.profile import FinetuneConfig
from edgetl.training.datasets import FeatureDataset
from edgetl.training.distributed import DistributedEnv
from edgetl.training.sampling import GlobalBatchSampler
from edgetl.training.strategies import Strategy

TRAIN_STATE_FORMAT = "edgetl.train-state/1"
CHECKPOINT_NAME = "last.pt"
# A frozen backbone runs in chunks of this many images: on CPU, depthwise-heavy nets are ~1.5-2x
# faster per image at batch 8 than at 32 (measured on EfficientNet-Lite0, 2 cores, channels_last).
# With BatchNorm in eval mode the chunking does not change the result.
FROZEN_CHUNK = 8


@dataclass
class EpochRecord:
    epoch: int
    trainable_blocks: int
    train_loss: float
    train_accuracy: float
    holdout_loss: float | None
    holdout_accuracy: float | None
    lr: float
    seconds: float
    train_resolution: int | None = None  # crop side this epoch; None when training on cached features


@dataclass
class TrainOutcome:
    history: list[EpochRecord]
    best_epoch: int
    stopped_early: bool
    monitor: str
    strategy: str
    trainable_parameters: int
    total_parameters: int
    cached_features: bool
    device: str
    mixed_precision: str
    world_size: int
    seconds: float
    resumed_from_epoch: int = 0
    head_init: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["history"] = [asdict(r) for r in self.history]
        return data


def initialise_head(built: BuiltBackbone, classes: list[str], mode: str) -> dict[str, Any]:
    """Start the new head from the pretrained classifier rows of matching ImageNet classes."""
    if mode == "random":
        return {"mode": "random"}
    if built.pretrained_head is None or built.spec.pretrained.classes != "imagenet-1k":
        if mode == "imagenet":
            raise ProfileError("finetune.head_init: 'imagenet' needs a pretrained ImageNet backbone")
        return {"mode": "random", "reason": "backbone has no pretrained ImageNet head"}
    matches, unmatched = match_imagenet_classes(classes)
    if unmatched:
        if mode == "imagenet":
            raise ProfileError(
                f"finetune.head_init: 'imagenet' but class folder(s) {', '.join(unmatched)} match no single "
                "ImageNet class; use 'auto' or 'random'"
            )
        return {"mode": "random", "reason": f"no unique ImageNet match for: {', '.join(unmatched)}"}
    weight, bias = built.pretrained_head
    rows = torch.tensor([m.imagenet_index for m in matches])
    with torch.no_grad():
        built.head.weight.copy_(weight[rows])
        built.head.bias.copy_(bias[rows])
    return {"mode": "imagenet", "matches": {m.class_name: m.imagenet_label for m in matches}}


class _Classifier(nn.Module):
    """features -> dropout -> head; what DistributedDataParallel wraps.

    Dropout masks are drawn per sample from its seed, so they do not depend on which process or
    batch a sample lands in (see edgetl.training.sampling).
    """

    def __init__(self, built: BuiltBackbone, dropout: float) -> None:
        super().__init__()
        self.model = built.model
        self.dropout = dropout
        self._features = built.features
        self.backbone_frozen = True
        self.inputs_are_features = False

    def forward(self, inputs: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        if self.inputs_are_features:
            features = inputs
        elif self.backbone_frozen:
            with torch.no_grad():
                features = torch.cat([self._features(chunk) for chunk in inputs.split(FROZEN_CHUNK)])
        else:
            features = self._features(inputs)
        if self.dropout > 0:
            features = features * _dropout_masks(seeds, features.shape[1], self.dropout).to(features)
        return self.model.get_classifier()(features)


def _dropout_masks(seeds: torch.Tensor, width: int, rate: float) -> torch.Tensor:
    rows = [torch.rand(width, generator=torch.Generator().manual_seed(int(seed))) >= rate for seed in seeds.tolist()]
    return torch.stack(rows).float() / (1.0 - rate)


class _EarlyStopper:
    def __init__(self, monitor: str, patience: int | None, min_delta: float) -> None:
        self.minimize = monitor.endswith("loss")
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        improved = self.best is None or (
            value < self.best - self.min_delta if self.minimize else value > self.best + self.min_delta
        )
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm)


def _param_groups(built: BuiltBackbone, strategy: Strategy, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """Head at lr; backbone at lr * ratio; no weight decay on norms and biases."""
    backbone_lr = cfg.lr * (cfg.backbone_lr_ratio if strategy.discriminative_lr else 1.0)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    head_params = {id(p) for p in built.head.parameters()}
    no_decay = {id(p) for m in built.model.modules() if _is_norm(m) for p in m.parameters(recurse=False)}
    for parameter in built.model.parameters():
        lr = cfg.lr if id(parameter) in head_params else backbone_lr
        decay = 0.0 if parameter.ndim <= 1 or id(parameter) in no_decay else cfg.weight_decay
        groups.setdefault((lr, decay), []).append(parameter)
    return [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": random.getstate(),
    }


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@dataclass
class _Run:
    """The mutable state of one training run (what a checkpoint saves)."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    criterion: nn.Module
    stopper: _EarlyStopper
    best_state: dict[str, torch.Tensor]
    history: list[EpochRecord] = field(default_factory=list)
    resumed_from: int = 0


class Trainer:
    def __init__(
        self,
        built: BuiltBackbone,
        strategy: Strategy,
        cfg: FinetuneConfig,
        train_set: torch.utils.data.Dataset,
        train_labels: list[int],
        holdout: tuple[torch.Tensor, torch.Tensor] | None,
        seed: int,
        log: Callable[[str], None],
        progress: bool = False,
        work_dir: Path | None = None,
        dist: DistributedEnv | None = None,
        on_epoch_end: Callable[[EpochRecord], None] | None = None,
    ) -> None:
        self.built = built
        self.strategy = strategy
        self.cfg = cfg
        self.train_set = train_set
        self.train_labels = train_labels
        self.holdout = holdout
        self.seed = seed
        self.log = log
        self.progress = progress
        self.work_dir = work_dir
        self.dist = dist or DistributedEnv()
        self.on_epoch_end = on_epoch_end
        self.epochs = planned_epochs(cfg.epochs, len(train_labels))
        self.device = self.dist.device(cfg.device)
        self.amp_dtype = self._amp_dtype()
        self.cache_features = (
            strategy.backbone_frozen_throughout and not cfg.augmentation.enabled and cfg.cache_features
        )

    # -- setup -----------------------------------------------------------------------------

    def _amp_dtype(self) -> torch.dtype | None:
        choice = self.cfg.mixed_precision
        if choice == "off" or (choice == "auto" and self.device.type != "cuda"):
            return None
        if choice == "bf16":
            return torch.bfloat16
        return torch.float16

    def _class_weights(self) -> torch.Tensor | None:
        if self.cfg.class_balance != "weighted_loss":
            return None
        counts = np.bincount(self.train_labels, minlength=self.built.num_classes).astype(np.float64)
        weights = len(self.train_labels) / (self.built.num_classes * np.maximum(counts, 1))
        return torch.tensor(weights, dtype=torch.float32, device=self.device)

    def _loader(self, dataset: torch.utils.data.Dataset) -> torch.utils.data.DataLoader:
        weights = None
        if self.cfg.class_balance == "sampler":
            counts = np.bincount(self.train_labels, minlength=self.built.num_classes)
            weights = [1.0 / counts[label] for label in self.train_labels]
        sampler = GlobalBatchSampler(
            len(dataset), self.cfg.batch_size, self.seed, self.dist.rank, self.dist.world_size, weights
        )
        uses_workers = self.cfg.num_workers > 0 and not self.cache_features
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=self.cfg.num_workers if uses_workers else 0,
            persistent_workers=uses_workers,
        )

    def _set_trainable(self, blocks: int) -> None:
        """Freeze everything, then unfreeze the head and the top `blocks` blocks."""
        self.built.model.requires_grad_(False)
        self.built.head.requires_grad_(True)
        top = self.built.groups[len(self.built.groups) - blocks :] if blocks else []
        for group in top:
            for module in group:
                module.requires_grad_(True)
        if self.cfg.freeze_batchnorm and self.strategy.pretrained:
            for group in top:
                for module in group:
                    for norm in (m for m in module.modules() if _is_norm(m)):
                        norm.requires_grad_(False)
        self._trained_groups = top

    def _train_mode(self) -> None:
        """Frozen blocks in eval mode (BatchNorm statistics fixed); trained blocks in train mode."""
        self.built.model.eval()
        self.built.head.train()
        for group in self._trained_groups:
            for module in group:
                module.train()
                if self.cfg.freeze_batchnorm and self.strategy.pretrained:
                    for norm in (m for m in module.modules() if _is_norm(m)):
                        norm.eval()

    def _wrap(self, classifier: _Classifier) -> nn.Module:
        if not self.dist.enabled:
            return classifier
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(classifier, device_ids=device_ids)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen-backbone features in eval mode (BatchNorm running statistics), batch by batch."""
        self.built.model.eval()
        outputs = []
        with torch.no_grad(), self._autocast():
            for chunk in images.split(FROZEN_CHUNK):
                outputs.append(self.built.features(self._to_device(chunk)).float())
        return torch.cat(outputs)

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def _cached_train_features(self) -> FeatureDataset:
        self.log(f"caching features: one backbone pass over {len(self.train_set)} training images")
        features = []
        for start in range(0, len(self.train_set), self.cfg.batch_size):
            indices = range(start, min(start + self.cfg.batch_size, len(self.train_set)))
            features.append(self._features(torch.stack([self.train_set[i][0] for i in indices])).cpu())
        return FeatureDataset(torch.cat(features), self.train_labels, self.seed)

    # -- the loop ----------------------------------------------------------------------------

    def _optimization(self, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any, Any]:
        """Optimizer over every parameter group, warm-up + cosine schedule, AMP grad scaler."""
        cfg = self.cfg
        params = _param_groups(self.built, self.strategy, cfg)
        optimizer: torch.optim.Optimizer
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True)
        else:
            optimizer = torch.optim.AdamW(params, lr=cfg.lr)
        total_steps = self.epochs * steps_per_epoch
        warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

        def schedule(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        return optimizer, scheduler, scaler

    def _train_epoch(self, epoch: int, module: nn.Module, loader: Any, run: _Run) -> tuple[float, float]:
        """One pass over this rank's batches; returns (mean loss, accuracy) over all ranks."""
        batches: Any = loader
        if self.progress:
            from tqdm.auto import tqdm

            batches = tqdm(loader, desc=f"epoch {epoch}/{self.epochs}", leave=False, unit="batch")
        loss_sum = correct = seen = 0.0
        for inputs, labels, seeds in batches:
            inputs = inputs.to(self.device, non_blocking=True)
            if inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            labels = labels.to(self.device, non_blocking=True)
            # Per-sample losses over the *global* batch (times the process count, since DDP averages
            # gradients): every process count optimizes the same objective.
            global_count = self.dist.sum([float(len(labels))], self.device)[0]
            with self._autocast():
                logits = module(inputs, seeds)
            loss = run.criterion(logits.float(), labels).sum() * (self.dist.world_size / global_count)
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
            run.scheduler.step()
            loss_sum += float(loss.detach()) * global_count / self.dist.world_size
            correct += float((logits.argmax(1) == labels).sum())
            seen += len(labels)
        loss_sum, correct, seen = self.dist.sum([loss_sum, correct, seen], self.device)
        return loss_sum / max(1.0, seen), correct / max(1.0, seen)

    def _restore(self, run: _Run, checkpoint: Path | None, resume: bool) -> None:
        if checkpoint is None or not checkpoint.is_file():
            return
        if not resume:
            self.log(
                f"an interrupted run left a checkpoint after epoch {_saved_epoch(checkpoint)}; "
                "starting over (pass --resume to continue it)"
            )
            return
        state = _load_state(checkpoint)
        self.built.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.scaler.load_state_dict(state["scaler"])
        run.stopper.load(state["stopper"])
        run.best_state = state["best_state"]
        run.history = [EpochRecord(**r) for r in state["history"]]
        _restore_rng(state["rng"])
        run.resumed_from = state["epoch"] + 1
        self.log(f"resuming after epoch {state['epoch']} from {checkpoint}")

    def _save(self, run: _Run, checkpoint: Path, epoch: int) -> None:
        _save_state(
            checkpoint,
            {
                "format": TRAIN_STATE_FORMAT,
                "epoch": epoch,
                "model": self.built.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "scaler": run.scaler.state_dict(),
                "stopper": run.stopper.state(),
                "best_state": run.best_state,
                "history": [asdict(r) for r in run.history],
                "rng": _rng_state(),
            },
        )

    def fit(self, resume: bool = False) -> TrainOutcome:
        started = time.perf_counter()
        cfg, strategy = self.cfg, self.strategy
        # channels_last: ~1.4x faster convolutions on CPU here, and what CUDA tensor cores want.
        self.built.model.to(self.device, memory_format=torch.channels_last)
        classifier = _Classifier(self.built, cfg.head_dropout)
        classifier.inputs_are_features = self.cache_features
        loader = self._loader(self._cached_train_features() if self.cache_features else self.train_set)
        sampler: GlobalBatchSampler = loader.batch_sampler  # type: ignore[assignment]

        holdout_features = None
        if self.holdout is not None and len(self.holdout[0]) and strategy.backbone_frozen_throughout:
            holdout_features = self._features(self.holdout[0])
        has_holdout = self.holdout is not None and len(self.holdout[0]) > 0
        monitor = cfg.early_stopping.monitor if has_holdout else "train_loss"
        optimizer, scheduler, scaler = self._optimization(max(1, len(loader)))
        run = _Run(
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            criterion=nn.CrossEntropyLoss(
                weight=self._class_weights(), label_smoothing=cfg.label_smoothing, reduction="none"
            ),
            stopper=_EarlyStopper(
                monitor, cfg.early_stopping.patience if has_holdout else None, cfg.early_stopping.min_delta
            ),
            best_state=copy.deepcopy(self.built.model.state_dict()),
        )
        checkpoint = self.work_dir / CHECKPOINT_NAME if self.work_dir else None
        self._restore(run, checkpoint, resume)

        current_blocks = -1
        module: nn.Module = classifier
        trainable_max = 0
        stop = run.stopper.should_stop and bool(run.history)
        for epoch in range(max(1, run.resumed_from), self.epochs + 1):
            if stop:
                break
            epoch_started = time.perf_counter()
            blocks = strategy.trainable_blocks(epoch)
            if blocks != current_blocks:
                self._set_trainable(blocks)
                classifier.backbone_frozen = blocks == 0
                module = self._wrap(classifier)
                if current_blocks >= 0 and blocks > current_blocks:
                    self.log(f"epoch {epoch}: unfreezing the top {blocks} of {strategy.total_blocks} blocks")
                current_blocks = blocks
            trainable_max = max(trainable_max, count_parameters(self.built.model, trainable_only=True))
            self._train_mode()
            sampler.set_epoch(epoch)
            train_loss, train_accuracy = self._train_epoch(epoch, module, loader, run)
            holdout_loss, holdout_accuracy = self._evaluate_holdout(holdout_features, nn.CrossEntropyLoss())
            record = EpochRecord(
                epoch=epoch,
                trainable_blocks=blocks,
                train_loss=train_loss,
                train_accuracy=train_accuracy,
                holdout_loss=holdout_loss,
                holdout_accuracy=holdout_accuracy,
                lr=max(group["lr"] for group in optimizer.param_groups),  # the head's
                seconds=time.perf_counter() - epoch_started,
                train_resolution=self._resolution(epoch),
            )
            run.history.append(record)
            value = {"holdout_loss": holdout_loss, "holdout_accuracy": holdout_accuracy}.get(monitor, train_loss)
            improved = run.stopper.update(float(value), epoch)
            if improved:
                run.best_state = copy.deepcopy(self.built.model.state_dict())
            held = f"  holdout loss {holdout_loss:.4f} acc {holdout_accuracy:.1%}" if holdout_loss is not None else ""
            side = f" at {record.train_resolution} px" if record.train_resolution else ""
            self.log(
                f"epoch {epoch:>2}/{self.epochs}{side}  train loss {train_loss:.4f} acc {train_accuracy:.1%}"
                f"{held}  ({record.seconds:.1f} s){'  *best' if improved else ''}"
            )
            stop = run.stopper.should_stop
            if checkpoint is not None and self.dist.is_main:
                self._save(run, checkpoint, epoch)
            if self.on_epoch_end is not None:
                self.on_epoch_end(record)
            if stop:
                self.log(f"early stopping: no {monitor} improvement for {run.stopper.bad_epochs} epochs")

        if not trainable_max:  # resumed after the last epoch: nothing ran in this process
            self._set_trainable(strategy.trainable_blocks(max(1, len(run.history))))
            trainable_max = count_parameters(self.built.model, trainable_only=True)
        # With early stopping the best holdout epoch is restored; without it the schedule ran to zero and
        # the final weights are kept (the holdout only reported on).
        best_epoch = run.stopper.best_epoch
        if cfg.early_stopping.patience is None and run.history:
            best_epoch = run.history[-1].epoch
        else:
            self.built.model.load_state_dict(run.best_state)
        self.built.model.to("cpu", memory_format=torch.contiguous_format)
        return TrainOutcome(
            history=run.history,
            best_epoch=best_epoch,
            stopped_early=len(run.history) < self.epochs,
            monitor=monitor,
            strategy=strategy.describe(),
            trainable_parameters=trainable_max,
            total_parameters=count_parameters(self.built.model),
            cached_features=self.cache_features,
            device=str(self.device),
            mixed_precision=str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "off",
            world_size=self.dist.world_size,
            seconds=time.perf_counter() - started,
            resumed_from_epoch=run.resumed_from,
        )

    def _resolution(self, epoch: int) -> int | None:
        """The crop side of this epoch's training images, where a resizing schedule sets it."""
        schedule = None if self.cache_features else getattr(self.train_set, "schedule", None)
        return None if schedule is None else int(schedule.side(epoch))

    def _evaluate_holdout(self, cached: torch.Tensor | None, loss: nn.Module) -> tuple[float | None, float | None]:
        if self.holdout is None or not len(self.holdout[0]):
            return None, None
        labels = self.holdout[1].to(self.device)
        self.built.model.eval()
        with torch.no_grad():
            if cached is not None:
                logits = self.built.head(cached)
            else:
                outputs = []
                with self._autocast():
                    for chunk in self.holdout[0].split(FROZEN_CHUNK):
                        outputs.append(self.built.model(self._to_device(chunk)).float())
                logits = torch.cat(outputs)
        return float(loss(logits, labels)), float((logits.argmax(1) == labels).float().mean())


def _save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as temp:
        torch.save(state, temp)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelFileError(
            f"{path}: training checkpoint unreadable ({error.__class__.__name__}); delete it"
        ) from None
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise ModelFileError(f"{path}: not an edgetl training checkpoint; delete it")
    return state


def _saved_epoch(path: Path) -> int | str:
    try:
        return int(_load_state(path)["epoch"])
    except (ModelFileError, KeyError, ValueError):
        return "?"
