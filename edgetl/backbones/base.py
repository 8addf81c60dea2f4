"""What a backbone builder returns (torch is imported here, not in the registry)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
    `groups` lists the backbone's layers from input to output (stem, each block, final conv):
    the unit that partial and gradual fine-tuning unfreeze, counted from the output end.
    `pretrained_head` keeps the discarded ImageNet classifier (weight, bias) so the new head can be
    initialised from matching rows (see `edgetl.backbones.imagenet`).
    """

    spec: BackboneSpec
    model: nn.Module
    num_classes: int
    groups: list[list[nn.Module]]
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


def count_macs(model: nn.Module, input_size: int) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (convolutions and linear layers)."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output[0].numel() * (module.in_channels // module.groups) * kernel

    def linear_hook(module: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += module.in_features * module.out_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


@contextmanager
def out_of_place(model: nn.Module) -> Iterator[nn.Module]:
    """The model with its in-place activations (`ReLU6(inplace=True)`, ...) switched to out-of-place, then restored.

    For `torch.export` and the exporters built on it: their functionalization decomposes every in-place
    op through a slow path (EfficientNet-Lite0's 33 in-place ReLU6: ONNX export 8.7 s -> 3.7 s on 2 AMD
    EPYC cores). The exported graph is the same: identical nodes, identical outputs.
    """
    switched = [module for module in model.modules() if getattr(module, "inplace", False) is True]
    for module in switched:
        module.inplace = False  # type: ignore[assignment]
    try:
        yield model
    finally:
        for module in switched:
            module.inplace = True  # type: ignore[assignment]
