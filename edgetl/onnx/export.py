"""PyTorch -> ONNX: the export every artefact starts from, and its parity check against PyTorch.

Uses the torch.export-based ONNX exporter (opset >= 18). For TF-"SAME"-padded backbones it folds
the padding into each Conv's `pads`, where the legacy TorchScript exporter emits a chain of
Shape/Gather/Pad ops per convolution that ONNX Runtime cannot fuse (1.3x slower fp32, and int8
convolutions stay unfused). For targets whose TensorRT parser stops below opset 18 the graph is lowered
(`edgetl.onnx.opset_lowering`), so what the parity check compares is what the device parses.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from edgetl import layout
from edgetl.errors import VerificationError
from edgetl.plan import build_plan
from edgetl.profile import Profile

OUTPUT_NAME = "logits"


def export_onnx(model: Any, input_shape: tuple[int, int, int], batch: int | str, opset: int) -> Any:
    """Export with torch's dynamo exporter; returns an onnx.ModelProto. Its chatter is captured."""
    import torch

    from edgetl.backbones.base import out_of_place

    example_batch = 2 if batch == "dynamic" else int(batch)
    example = torch.zeros((example_batch, *input_shape), dtype=torch.float32)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if batch == "dynamic" else None
    chatter = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(chatter),
            contextlib.redirect_stderr(chatter),
            torch.no_grad(),
            out_of_place(model),
        ):
            program = torch.onnx.export(
                model,
                (example,),
                None,
                dynamo=True,
                opset_version=opset,
                input_names=[layout.INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic,
                optimize=True,
                verbose=False,
            )
    except Exception as error:  # the exporter raises many types; keep its first line, not its log
        first_line = (str(error).strip().splitlines() or [error.__class__.__name__])[0]
        raise VerificationError(
            f"ONNX export failed: {first_line}", hint="rerun with --debug for the traceback"
        ) from error
    return program.model_proto


def export_for_profile(model: Any, input_shape: tuple[int, int, int], profile: Profile, what: str) -> Any:
    """The profile's export (batch, opset), lowered to the opset the target's parser reads (`Profile.onnx_opset`)."""
    proto = export_onnx(model, input_shape, profile.export.batch_size, profile.export.opset)
    if build_plan(profile).onnx_opset < profile.export.opset:
        from edgetl.onnx.opset_lowering import lower_opset

        proto = lower_opset(proto, build_plan(profile).onnx_opset, what)
    return proto


def parity(torch_model: Any, onnx_path: Path, images: np.ndarray, tolerance: float) -> dict[str, Any]:
    import torch

    from edgetl.backends.onnxruntime.runner import OnnxRuntimeRunner

    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images)).numpy()
    with OnnxRuntimeRunner(onnx_path) as runner:
        actual = runner.infer_any_batch(images)
    difference = np.abs(expected - actual)
    return {
        "images": int(len(images)),
        "max_abs_logit_diff": float(difference.max()),
        "mean_abs_logit_diff": float(difference.mean()),
        "top1_agreement": float((expected.argmax(1) == actual.argmax(1)).mean()),
        "tolerance": tolerance,
        "passed": bool(difference.max() <= tolerance),
    }
