"""Deployment targets: which runtime runs the shipped model and in which precision.

A target decides which artefact is *deployed* (the one budgets are checked against) and what can
be verified on the build machine. Only `x86-cpu` exists so far; NVIDIA and Jetson targets plug in
here (issue 6).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from edgetl.errors import ProfileError


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    runtime: str  # "onnxruntime" | "tensorrt"
    precisions: tuple[str, ...]
    # Artefact shipped when int8 quantization is enabled / disabled.
    deploy_int8: str
    deploy_float: str
    verified_here: bool
    notes: str = ""

    def deployed_artifact(self, int8_enabled: bool) -> str:
        return self.deploy_int8 if int8_enabled else self.deploy_float


_TARGETS: dict[str, Target] = {
    "x86-cpu": Target(
        name="x86-cpu",
        description="x86-64 CPU with ONNX Runtime (CPUExecutionProvider)",
        runtime="onnxruntime",
        precisions=("fp32", "int8"),
        deploy_int8="onnx_int8",
        deploy_float="onnx_fp32",
        verified_here=True,
        notes="int8 uses QDQ with uint8 activations and per-channel int8 weights (MLAS u8s8 kernels).",
    ),
}


def target_names() -> list[str]:
    return sorted(_TARGETS)


def unknown_target_message(name: str) -> str:
    close = difflib.get_close_matches(name, target_names(), n=1)
    suggestion = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown target {name!r}{suggestion} known targets: {', '.join(target_names())}"


def get_target(name: str) -> Target:
    try:
        return _TARGETS[name]
    except KeyError:
        raise ProfileError(unknown_target_message(name)) from None
