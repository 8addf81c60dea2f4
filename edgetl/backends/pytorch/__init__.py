"""PyTorch eager: the fine-tuned checkpoint, measured as the baseline (never shipped to a device)."""

from __future__ import annotations

from edgetl import layout
from edgetl.backends.base import Artifact, Backend

BACKEND = Backend(
    name="torch",
    label="PyTorch eager",
    artifacts=(Artifact("torch_fp32", "torch", "fp32", "finetune", layout.CHECKPOINT, "pytorch"),),
    runner="edgetl.backends.pytorch.runner:TorchRunner",
    requires=("torch",),
    extra="build",
)
