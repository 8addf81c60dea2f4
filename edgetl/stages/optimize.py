"""Optimize stage: static int8 (QDQ) and fp16 from the exported fp32 ONNX model.

Thin: the int8 recipe (calibration on the data stage's pool, never val; bias correction / AdaRound;
QAT; the accuracy-aware fallback) is `edgetl.quantization.recipe.quantize_int8`, fp16 is
`edgetl.quantization.fp16`. The benchmark stage then measures the results on val.

Outputs: `models/model_int8.onnx`, `models/model_fp16.onnx` (if enabled),
`optimize/quantization.json`, `optimize/calibration.json` (every tensor's range).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl import layout
from edgetl.data.split import read_split
from edgetl.files import write_json_atomic
from edgetl.machine import package_versions
from edgetl.profile import profile_section
from edgetl.quantization.recipe import Int8Recipe, accuracy_budget, resolve_reduce_range
from edgetl.stages.base import BuildContext, Stage
from edgetl.summaries import OptimizeSummary
from edgetl.targets import get_target


class OptimizeStage(Stage):
    name = "optimize"
    summary_type = OptimizeSummary

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        return {
            "optimize": profile_section(ctx.profile, "optimize"),
            "accuracy_budget": accuracy_budget(ctx.profile),
            "symmetric": get_target(ctx.profile.target).uses_tensorrt,
            "reduce_range": resolve_reduce_range(ctx.profile),
            "threads": ctx.profile.benchmark.threads,
            "model": ctx.results["export"].files[layout.ONNX_FP32],
            "checkpoint": ctx.results["finetune"].files[layout.CHECKPOINT],  # QAT fine-tunes it
            "split": ctx.results["data"].files[layout.SPLIT],
            "versions": package_versions("onnx", "onnxruntime"),
        }

    def run(self, ctx: BuildContext, out: Path) -> OptimizeSummary:
        fp16 = self._fp16(ctx, out) if ctx.profile.optimize.fp16.enabled else None
        int8 = self._int8(ctx, out) if ctx.profile.optimize.int8.enabled else None
        if int8 is None:
            ctx.log.stage(self.name, "int8 disabled in the profile")
        return OptimizeSummary(int8=int8, fp16=fp16)

    def _fp16(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        from edgetl.onnx import tools as onnx_tools
        from edgetl.quantization.fp16 import convert_to_fp16

        source = ctx.results["export"].path(layout.ONNX_FP32)
        target = out / layout.ONNX_FP16
        target.parent.mkdir(parents=True, exist_ok=True)
        record = convert_to_fp16(source, target)
        model = onnx_tools.load_model(target)
        onnx_tools.check(model, layout.ONNX_FP16)
        ratio = target.stat().st_size / source.stat().st_size
        ctx.log.stage(self.name, f"fp16 model {target.stat().st_size / 1e6:.2f} MB ({ratio:.2f}x the fp32 file)")
        return record | {"size_bytes": target.stat().st_size, "size_ratio": ratio}

    def _int8(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        from edgetl.onnx.export import export_for_profile
        from edgetl.preprocessing import read_preprocessing
        from edgetl.quantization.recipe import Int8Data, quantize_int8

        split = read_split(ctx.results["data"].path(layout.SPLIT))
        data = Int8Data(
            preprocessing=read_preprocessing(ctx.results["finetune"].path(layout.PREPROCESSING)),
            calibration_pool=split.paths("calibration_pool"),
            train=split.paths("train"),
            checkpoint=ctx.results["finetune"].path(layout.CHECKPOINT),
            classes=split.classes,
            root=split.root,
            export=lambda model, shape, what: export_for_profile(model, shape, ctx.profile, what),
        )
        result = quantize_int8(
            ctx.results["export"].path(layout.ONNX_FP32),
            out / layout.ONNX_INT8,
            Int8Recipe.from_profile(ctx.profile),
            data,
            ctx.work_dir,
            log=lambda message: ctx.log.stage(self.name, message),
        )
        write_json_atomic(out / layout.CALIBRATION, result.ranges)
        write_json_atomic(out / layout.QUANTIZATION, result.record)
        return result.summary
