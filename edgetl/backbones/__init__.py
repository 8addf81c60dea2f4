"""Backbone registry (torch-free) and builders (imported lazily)."""

from edgetl.backbones.registry import (
    BackboneSpec,
    PretrainedConfig,
    backbone_names,
    get_backbone,
    list_backbones,
)

__all__ = ["BackboneSpec", "PretrainedConfig", "backbone_names", "get_backbone", "list_backbones"]
