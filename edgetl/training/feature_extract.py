"""Feature-extraction fine-tuning: frozen pretrained backbone, a new linear head, early stopping.

The backbone stays in eval mode (BatchNorm statistics frozen) and runs under no_grad; only the
head is trained, on augmented images. Early stopping watches a holdout carved out of train whose
features are computed once. The best epoch's head is restored at the end.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from edgetl.backbones.base import BuiltBackbone, count_parameters
from edgetl.backbones.imagenet import match_imagenet_classes
from edgetl.errors import ProfileError
from edgetl.profile import FinetuneConfig


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    holdout_loss: float | None
    holdout_accuracy: float | None
    lr: float
    seconds: float


@dataclass
class TrainOutcome:
    history: list[EpochRecord]
    best_epoch: int
    stopped_early: bool
    monitor: str
    trainable_parameters: int
    total_parameters: int
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
            raise ProfileError("finetune.head_init: 'imagenet' needs backbone.pretrained: true (an ImageNet head)")
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


def _batched_features(built: BuiltBackbone, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([built.features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def _optimizer(params: list[nn.Parameter], cfg: FinetuneConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class _EarlyStopper:
    def __init__(self, monitor: str, patience: int | None, min_delta: float) -> None:
        self.minimize = monitor.endswith("loss")
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record `value`; True if it is the new best."""
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


def train_feature_extract(
    built: BuiltBackbone,
    train_loader: torch.utils.data.DataLoader,
    holdout: tuple[torch.Tensor, torch.Tensor] | None,
    cfg: FinetuneConfig,
    log: Callable[[str], None],
    progress: bool = False,
) -> TrainOutcome:
    model, head = built.model, built.head
    model.requires_grad_(False)
    head.requires_grad_(True)
    model.eval()
    dropout = nn.Dropout(cfg.head_dropout)
    optimizer = _optimizer(list(head.parameters()), cfg)
    total_steps = max(1, cfg.epochs * len(train_loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    plain_loss = nn.CrossEntropyLoss()

    holdout_features = None
    if holdout is not None and len(holdout[0]):
        holdout_features = (_batched_features(built, holdout[0], cfg.batch_size), holdout[1])
    monitor = cfg.early_stopping.monitor if holdout_features is not None else "train_loss"
    stopper = _EarlyStopper(
        monitor, cfg.early_stopping.patience if holdout_features is not None else None, cfg.early_stopping.min_delta
    )
    best_state = copy.deepcopy(head.state_dict())
    history: list[EpochRecord] = []

    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        head.train()
        dropout.train()
        loss_sum, correct, seen = 0.0, 0, 0
        batches = train_loader
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch")
        for images, labels in batches:
            with torch.no_grad():
                features = built.features(images)
            logits = head(dropout(features))
            loss = criterion(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        lr = optimizer.param_groups[0]["lr"]
        head.eval()
        holdout_loss = holdout_accuracy = None
        if holdout_features is not None:
            with torch.no_grad():
                logits = head(holdout_features[0])
                holdout_loss = float(plain_loss(logits, holdout_features[1]))
                holdout_accuracy = float((logits.argmax(1) == holdout_features[1]).float().mean())
        record = EpochRecord(
            epoch=epoch,
            train_loss=loss_sum / max(1, seen),
            train_accuracy=correct / max(1, seen),
            holdout_loss=holdout_loss,
            holdout_accuracy=holdout_accuracy,
            lr=lr,
            seconds=time.perf_counter() - started,
        )
        history.append(record)
        value = {"holdout_loss": holdout_loss, "holdout_accuracy": holdout_accuracy}.get(monitor, record.train_loss)
        improved = stopper.update(float(value), epoch)
        if improved:
            best_state = copy.deepcopy(head.state_dict())
        held = f"  holdout loss {holdout_loss:.4f} acc {holdout_accuracy:.1%}" if holdout_loss is not None else ""
        log(
            f"epoch {epoch:>2}/{cfg.epochs}  train loss {record.train_loss:.4f} acc {record.train_accuracy:.1%}"
            f"{held}  ({record.seconds:.1f} s){'  *best' if improved else ''}"
        )
        if stopper.should_stop:
            log(f"early stopping: no {monitor} improvement for {stopper.bad_epochs} epochs")
            break

    head.load_state_dict(best_state)
    return TrainOutcome(
        history=history,
        best_epoch=stopper.best_epoch,
        stopped_early=len(history) < cfg.epochs,
        monitor=monitor,
        trainable_parameters=count_parameters(head),
        total_parameters=count_parameters(model),
    )
