"""What a backbone builder returns (torch is imported here, not in the registry)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgetl.backbones.registry import BackboneSpec


@dataclass
class BuiltBackbone:
    """A classification model with a fresh head, plus what it was built from.

    `model` follows timm's interface: `forward_features(x)`, `forward_head(x, pre_logits=True)`
    for pooled features, and `get_classifier()` for the new head.
    `pretrained_head` keeps the discarded ImageNet classifier (weight, bias) so the new head can be
    initialised from matching rows (see `edgetl.backbones.imagenet`).
    """

    spec: BackboneSpec
    model: nn.Module
    num_classes: int
    weights_file: Path | None = None
    weights_sha256: str | None = None
    pretrained_head: tuple[torch.Tensor, torch.Tensor] | None = None
    notes: list[str] = field(default_factory=list)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features (what the head sees)."""
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)

    @property
    def head(self) -> nn.Linear:
        classifier = self.model.get_classifier()
        if not isinstance(classifier, nn.Linear):
            raise TypeError(f"expected a Linear classifier, got {type(classifier).__name__}")
        return classifier


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
