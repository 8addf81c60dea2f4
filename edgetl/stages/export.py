"""Export stage: PyTorch checkpoint -> one self-contained ONNX file, verified on real images.

Thin: the export and the parity check are `edgetl.onnx.export`. The exported model (lowered for targets
whose TensorRT parser stops below opset 18) is checked with onnx.checker, then compared with PyTorch
on real val images; the build fails if the largest logit difference exceeds the profile's tolerance.

Outputs: `models/model_fp32.onnx`, `export/parity.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl import layout
from edgetl.data.split import read_split
from edgetl.errors import VerificationError
from edgetl.files import write_json_atomic
from edgetl.machine import package_versions
from edgetl.onnx.export import export_for_profile, parity
from edgetl.plan import build_plan
from edgetl.profile import profile_section
from edgetl.stages.base import BuildContext, Stage
from edgetl.summaries import ExportSummary


class ExportStage(Stage):
    name = "export"
    summary_type = ExportSummary

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        return {
            "export": profile_section(ctx.profile, "export"),
            "opset": build_plan(
                ctx.profile
            ).onnx_opset,  # lower than export.opset when the target's TensorRT parser needs it
            "checkpoint": ctx.results["finetune"].files[layout.CHECKPOINT],
            "split": ctx.results["data"].files[layout.SPLIT],
            "versions": package_versions("torch", "onnx", "onnxscript", "onnxruntime"),
        }

    def run(self, ctx: BuildContext, out: Path) -> ExportSummary:
        from edgetl.backbones.checkpoint import load_checkpoint
        from edgetl.onnx import tools as onnx_tools

        cfg = ctx.profile.export
        checkpoint = load_checkpoint(ctx.results["finetune"].path(layout.CHECKPOINT))
        model = checkpoint.build_model()
        pre = checkpoint.preprocessing
        ctx.log.stage(self.name, f"exporting ONNX (opset {cfg.opset}, batch {cfg.batch_size})")
        proto = export_for_profile(model, pre.input_shape, ctx.profile, layout.ONNX_FP32)
        opset = build_plan(ctx.profile).onnx_opset
        if opset < cfg.opset:
            ctx.log.stage(
                self.name,
                f"lowered to opset {opset} (IR {proto.ir_version}): the target's TensorRT parser reads no newer",
            )
        onnx_tools.embed_metadata(proto, checkpoint.classes, pre, **{"edgetl.precision": "fp32"})
        onnx_tools.check(proto, layout.ONNX_FP32)
        target = out / layout.ONNX_FP32
        onnx_tools.save_model(proto, target)

        split = read_split(ctx.results["data"].path(layout.SPLIT))
        paths, _ = split.paths("val")
        if not paths:
            paths, _ = split.paths("train")
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
        return ExportSummary(
            opset=onnx_tools.opset(proto),
            ir_version=proto.ir_version,
            io=onnx_tools.io_summary(proto),
            ops=onnx_tools.op_census(proto),
            size_bytes=target.stat().st_size,
            parity=result,
        )
