"""Export stage: PyTorch checkpoint -> one self-contained ONNX file, verified on real images.

Uses the torch.export-based ONNX exporter (opset >= 18). For TF-"SAME"-padded backbones it folds
the padding into each Conv's `pads`, where the legacy TorchScript exporter emits a chain of
Shape/Gather/Pad ops per convolution that ONNX Runtime cannot fuse (1.3x slower fp32, and int8
convolutions stay unfused). The exported model is checked with onnx.checker, then compared with
PyTorch on real val images; the build fails if the largest logit difference exceeds the profile's
tolerance.

For targets whose TensorRT parser stops below opset 18 (8.2: 13, 8.4-8.6: 17) the exported graph is
lowered (`edgetl.opset_lowering`) before the checker and the parity check, so what is verified is
what the device parses.

Outputs: `models/model_fp32.onnx`, `export/parity.json`.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from edgetl import layout
from edgetl.errors import VerificationError
from edgetl.files import write_json_atomic
from edgetl.machine import package_versions
from edgetl.profile import Profile, profile_section
from edgetl.stages.base import BuildContext, Stage
from edgetl.stages.data import read_split, split_paths

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
    if profile.onnx_opset < profile.export.opset:
        from edgetl.opset_lowering import lower_opset

        proto = lower_opset(proto, profile.onnx_opset, what)
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


class ExportStage(Stage):
    name = "export"

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        return {
            "export": profile_section(ctx.profile, "export"),
            "opset": ctx.profile.onnx_opset,  # lower than export.opset when the target's TensorRT parser needs it
            "checkpoint": ctx.results["finetune"].files[layout.CHECKPOINT],
            "split": ctx.results["data"].files[layout.SPLIT],
            "versions": package_versions("torch", "onnx", "onnxscript", "onnxruntime"),
        }

    def run(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        from edgetl import onnx_tools
        from edgetl.training.checkpoint import load_checkpoint

        cfg = ctx.profile.export
        checkpoint = load_checkpoint(ctx.results["finetune"].path(layout.CHECKPOINT))
        model = checkpoint.build_model()
        pre = checkpoint.preprocessing
        ctx.log.stage(self.name, f"exporting ONNX (opset {cfg.opset}, batch {cfg.batch_size})")
        proto = export_for_profile(model, pre.input_shape, ctx.profile, layout.ONNX_FP32)
        if ctx.profile.onnx_opset < cfg.opset:
            ctx.log.stage(
                self.name,
                f"lowered to opset {ctx.profile.onnx_opset} (IR {proto.ir_version}): the target's TensorRT parser "
                "reads no newer",
            )
        onnx_tools.embed_metadata(proto, checkpoint.classes, pre, **{"edgetl.precision": "fp32"})
        onnx_tools.check(proto, layout.ONNX_FP32)
        target = out / layout.ONNX_FP32
        onnx_tools.save_model(proto, target)

        split = read_split(ctx.results["data"].path(layout.SPLIT))
        paths, _ = split_paths(split, "val")
        if not paths:
            paths, _ = split_paths(split, "train")
        images = pre.batch(paths[: cfg.parity_images])
        result = parity(model, target, images, cfg.parity_tolerance)
        write_json_atomic(out / layout.EXPORT_PARITY, result)
        ctx.log.stage(
            self.name,
            f"parity on {result['images']} real images: max |logit diff| {result['max_abs_logit_diff']:.2e} "
            f"(tolerance {cfg.parity_tolerance:g}), top-1 agreement {result['top1_agreement']:.0%}",
        )
        if not result["passed"]:
            raise VerificationError(
                f"ONNX export does not match PyTorch: max |logit diff| {result['max_abs_logit_diff']:.3g} > "
                f"export.parity_tolerance {cfg.parity_tolerance:g}"
            )
        return {
            "opset": onnx_tools.opset(proto),
            "ir_version": proto.ir_version,
            "io": onnx_tools.io_summary(proto),
            "ops": onnx_tools.op_census(proto),
            "size_bytes": target.stat().st_size,
            "parity": result,
        }
