"""torchvision classification backbones behind the same interface as timm models.

`ClassifierAdapter` splits a torchvision model into body (spatial features), pre-logits (pooling,
plus MobileNetV3's pretrained hidden layer) and a replaceable linear head, so training, export
and head initialisation treat every backbone alike. Weights are torchvision's IMAGENET1K_V1 files,
found in the torch hub cache or downloaded with a timeout (see `edgetl.backbones.weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from edgetl.backbones.base import BuiltBackbone
from edgetl.backbones.registry import BackboneSpec
from edgetl.backbones.weights import load_state_dict, locate_weights
from edgetl.errors import ModelFileError, first_line
from edgetl.files import sha256_file


class ClassifierAdapter(nn.Module):
    """body -> pre_logits -> head, with timm's method names."""

    def __init__(self, body: nn.Module, pre_logits: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.body = body
        self.pre_logits = pre_logits
        self.head = head

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.pre_logits(features)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def get_classifier(self) -> nn.Linear:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.head.in_features, num_classes)


def _pool() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def _mobilenet_like(model: nn.Module) -> tuple[ClassifierAdapter, list[list[nn.Module]]]:
    """mobilenet_v2 / efficientnet_b0: features -> pool -> [Dropout, Linear]."""
    adapter = ClassifierAdapter(model.features, _pool(), model.classifier[-1])
    return adapter, [[block] for block in model.features]


def _mobilenet_v3(model: nn.Module) -> tuple[ClassifierAdapter, list[list[nn.Module]]]:
    """features -> pool -> Linear -> Hardswish -> Dropout -> Linear: the hidden layer is pretrained."""
    hidden = nn.Sequential(*list(model.classifier.children())[:-1])
    adapter = ClassifierAdapter(model.features, nn.Sequential(_pool(), hidden), model.classifier[-1])
    groups = [[block] for block in model.features]
    groups[-1].append(hidden)  # the hidden layer is unfrozen together with the last conv
    return adapter, groups


def _resnet(model: nn.Module) -> tuple[ClassifierAdapter, list[list[nn.Module]]]:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    layers = [model.layer1, model.layer2, model.layer3, model.layer4]
    adapter = ClassifierAdapter(nn.Sequential(stem, *layers), _pool(), model.fc)
    return adapter, [[stem], *([block] for layer in layers for block in layer)]


_ADAPTERS: dict[str, Callable[[nn.Module], tuple[ClassifierAdapter, list[list[nn.Module]]]]] = {
    "mobilenet_v2": _mobilenet_like,
    "efficientnet_b0": _mobilenet_like,
    "mobilenet_v3_small": _mobilenet_v3,
    "mobilenet_v3_large": _mobilenet_v3,
    "resnet18": _resnet,
}


def build_torchvision(
    spec: BackboneSpec, num_classes: int, pretrained: bool = True, weights: Path | None = None
) -> BuiltBackbone:
    import torchvision

    model = torchvision.models.get_model(spec.name, weights=None)
    built_weights: tuple[Path, str] | None = None
    if pretrained:
        path = locate_weights(spec, weights)
        try:
            model.load_state_dict(load_state_dict(path), strict=True)
        except RuntimeError as error:
            raise ModelFileError(f"{path}: weights do not fit {spec.name} ({first_line(error)})") from None
        built_weights = (path, sha256_file(path))
    adapter, groups = _ADAPTERS[spec.name](model)
    built = BuiltBackbone(spec=spec, model=adapter, num_classes=num_classes, groups=groups)
    if built_weights is not None:
        built.weights_file, built.weights_sha256 = built_weights
        head = adapter.get_classifier()
        built.pretrained_head = (head.weight.detach().clone(), head.bias.detach().clone())
    adapter.reset_classifier(num_classes)
    return built
