"""`strategy: auto`: choose a fine-tuning strategy from data size and domain fit, and say why.

Two measurements decide, following the usual transfer-learning guidance:
* data size: the number of training images in the smallest class;
* domain fit: the holdout accuracy of a linear probe (logistic regression) on frozen pretrained
  features. High accuracy means the pretrained features already separate the classes.

|                         | fit >= 90 %      | fit < 90 %  |
|-------------------------|------------------|-------------|
| < 200 images per class  | feature_extract  | partial     |
| 200 - 999               | partial          | gradual     |
| >= 1000                 | gradual          | full        |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

SMALL_PER_CLASS = 200
LARGE_PER_CLASS = 1000
GOOD_FIT = 0.90
PROBE_IMAGES_PER_CLASS = 100


@dataclass(frozen=True)
class AutoChoice:
    strategy: str
    images_per_class_min: int
    linear_probe_accuracy: float
    probe_images: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "images_per_class_min": self.images_per_class_min,
            "linear_probe_accuracy": self.linear_probe_accuracy,
            "probe_images": self.probe_images,
            "reason": self.reason,
        }


def decide(images_per_class_min: int, fit: float) -> tuple[str, str]:
    good = fit >= GOOD_FIT
    fit_text = f"a linear probe on frozen features reaches {fit:.1%} ({'>=' if good else '<'} {GOOD_FIT:.0%}: "
    fit_text += "the pretrained features fit this domain)" if good else "the domain differs from the pretraining data)"
    if images_per_class_min < SMALL_PER_CLASS:
        size_text = f"{images_per_class_min} images in the smallest class is little data (< {SMALL_PER_CLASS})"
        choice = "feature_extract" if good else "partial"
    elif images_per_class_min < LARGE_PER_CLASS:
        size_text = f"{images_per_class_min} images in the smallest class is a medium dataset"
        choice = "partial" if good else "gradual"
    else:
        size_text = f"{images_per_class_min} images in the smallest class is plenty (>= {LARGE_PER_CLASS})"
        choice = "gradual" if good else "full"
    return choice, f"{size_text} and {fit_text}: {choice}"


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    l2: float = 1e-3,
) -> float:
    """Multinomial logistic regression, full-batch L-BFGS on standardized features."""
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    x_train, x_test = (train_features - mean) / std, (test_features - mean) / std
    generator = torch.Generator().manual_seed(0)
    weight = torch.zeros(x_train.shape[1], num_classes).normal_(0, 0.01, generator=generator).requires_grad_()
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x_train @ weight + bias, train_labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((x_test @ weight + bias).argmax(1) == test_labels).float().mean())


def probe_subset(labels: list[int], per_class: int, seed: int) -> list[int]:
    """Indices of at most `per_class` images of each class, seeded."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in sorted(set(labels)):
        indices = [i for i, value in enumerate(labels) if value == label]
        rng.shuffle(indices)
        chosen += indices[:per_class]
    return sorted(chosen)
