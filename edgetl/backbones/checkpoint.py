"""The fine-tuned checkpoint: a plain state dict plus what is needed to rebuild the model.

Saved with torch.save and always loaded with `weights_only=True`: no pickled code is executed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgetl.backbones.registry import get_backbone
from edgetl.errors import ModelFileError, first_line
from edgetl.files import atomic_path
from edgetl.preprocessing import Preprocessing

CHECKPOINT_FORMAT = "edgetl.checkpoint/1"


@dataclass
class Checkpoint:
    backbone: str
    classes: list[str]
    preprocessing: Preprocessing
    state_dict: dict[str, torch.Tensor]
    extra: dict[str, Any]

    def build_model(self) -> nn.Module:
        """Rebuild the architecture (no pretrained download) and load the fine-tuned weights."""
        built = get_backbone(self.backbone).build(num_classes=len(self.classes), pretrained=False)
        try:
            built.model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as error:
            raise ModelFileError(f"checkpoint does not fit {self.backbone}: {first_line(error)}") from None
        return built.model.eval()


def save_checkpoint(
    path: Path, model: nn.Module, backbone: str, classes: list[str], pre: Preprocessing, **extra: Any
) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "backbone": backbone,
        "classes": list(classes),
        "preprocessing": pre.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    with atomic_path(path) as temp:
        torch.save(payload, temp)


def load_checkpoint(path: Path) -> Checkpoint:
    if not path.is_file():
        raise ModelFileError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelFileError(f"{path}: not a readable checkpoint ({error.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: not an edgetl checkpoint (expected format {CHECKPOINT_FORMAT})")
    return Checkpoint(
        backbone=payload["backbone"],
        classes=list(payload["classes"]),
        preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
        state_dict=payload["state_dict"],
        extra=payload.get("extra", {}),
    )
