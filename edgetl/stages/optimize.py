"""Optimize stage: static int8 quantization with ONNX Runtime (QDQ), calibrated on train images.

QDQ keeps the graph portable: ONNX Runtime fuses Q/DQ pairs into integer kernels on CPU, and
TensorRT builds explicit-precision int8 engines from the same file. The defaults (uint8
activations, per-channel int8 weights) are what makes ORT's CPU kernels fast: signed activations
leave many convolutions in float. Calibration images come from the data stage's calibration pool
(train + holdout, never val).

Outputs: `models/model_int8.onnx`, `optimize/quantization.json`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import ProfileError, VerificationError
from edgetl.files import write_json_atomic
from edgetl.profile import Int8Config, profile_section
from edgetl.runtime.predictor import MODEL_FILES
from edgetl.stages.base import BuildContext, Stage, package_versions
from edgetl.stages.data import SPLIT_FILE, read_split, split_paths
from edgetl.stages.export import FP32_FILE, INPUT_NAME
from edgetl.stages.finetune import PREPROCESSING_FILE

INT8_FILE = MODEL_FILES["onnx_int8"]
QUANTIZATION_FILE = "optimize/quantization.json"
_CALIBRATION_BATCH = 16


class ImageCalibrationReader:
    """onnxruntime `CalibrationDataReader` over image files, preprocessed like the runtime does."""

    def __init__(self, paths: list[Path], preprocessing: Any, batch_size: int, fixed_batch: bool = False) -> None:
        self.paths = paths
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.fixed_batch = fixed_batch  # pad the last batch for models that only accept `batch_size`
        self._position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self.paths):
            return None
        chunk = self.paths[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        batch = self.preprocessing.batch(chunk)
        if self.fixed_batch and len(batch) < self.batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], self.batch_size - len(batch), axis=0)])
        return {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._position = 0

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)


def _quant_types(cfg: Int8Config) -> tuple[Any, Any]:
    from onnxruntime.quantization import QuantType

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    return types[cfg.activation_type], types[cfg.weight_type]


def _calibration_method(cfg: Int8Config) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[cfg.calibration_method]


def float_node_names(model: Any, cfg: Int8Config) -> list[str]:
    """Resolve `keep_float` layer roles and `exclude_nodes` to node names of `model`."""
    nodes = list(model.graph.node)
    names = {node.name for node in nodes}
    unknown = [name for name in cfg.exclude_nodes if name not in names]
    if unknown:
        examples = ", ".join(sorted(names)[:5])
        raise ProfileError(
            f"optimize.int8.exclude_nodes: no node named {', '.join(unknown)} (nodes are named like {examples})"
        )
    graph_inputs = {value.name for value in model.graph.input}
    selected = list(cfg.exclude_nodes)
    if "first_conv" in cfg.keep_float:
        selected += [n.name for n in nodes if n.op_type == "Conv" and graph_inputs & set(n.input)][:1]
    if "classifier" in cfg.keep_float:
        selected += [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
    return list(dict.fromkeys(selected))


def quantize_int8(source: Path, target: Path, reader: ImageCalibrationReader, cfg: Int8Config) -> dict[str, Any]:
    """Path-in / path-out static quantization; returns what was done, for the record."""
    import onnx
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    activation_type, weight_type = _quant_types(cfg)
    with tempfile.TemporaryDirectory(prefix="edgetl-quant-") as work:
        prepared = Path(work) / "prepared.onnx"
        notes = []
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
        except Exception as error:  # pre-processing is an optimization; quantize the raw model instead
            notes.append(f"quant_pre_process skipped: {str(error).splitlines()[0]}")
            prepared = source
        kept_float = float_node_names(onnx.load(str(prepared)), cfg)
        quantize_static(
            str(prepared),
            str(target),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=activation_type,
            weight_type=weight_type,
            per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range,
            calibrate_method=_calibration_method(cfg),
            nodes_to_exclude=kept_float,
            extra_options={"CalibTensorRangeSymmetric": False},
        )
    return {"notes": notes, "float_nodes": kept_float}


class OptimizeStage(Stage):
    name = "optimize"

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        return {
            "optimize": profile_section(ctx.profile, "optimize"),
            "model": ctx.results["export"].files[FP32_FILE],
            "split": ctx.results["data"].files[SPLIT_FILE],
            "versions": package_versions("onnx", "onnxruntime"),
        }

    def run(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        from edgetl import onnx_tools
        from edgetl.preprocessing import read_preprocessing
        from edgetl.runtime.runners import OnnxRuntimeRunner

        cfg = ctx.profile.optimize.int8
        if not cfg.enabled:
            ctx.log.stage(self.name, "int8 disabled in the profile; shipping fp32")
            return {"int8": None}
        source = ctx.results["export"].path(FP32_FILE)
        pre = read_preprocessing(ctx.results["finetune"].path(PREPROCESSING_FILE))
        split = read_split(ctx.results["data"].path(SPLIT_FILE))
        pool, _ = split_paths(split, "calibration_pool")
        calibration = pool[: cfg.calibration_images]
        available = (
            "" if len(calibration) == cfg.calibration_images else f" (all there are; {cfg.calibration_images} asked)"
        )
        fixed = onnx_tools.io_summary(onnx_tools.load_model(source))["inputs"][INPUT_NAME][0]
        is_fixed = isinstance(fixed, int) and fixed > 0
        reader = ImageCalibrationReader(calibration, pre, fixed if is_fixed else _CALIBRATION_BATCH, is_fixed)
        ctx.log.stage(
            self.name,
            f"int8 QDQ: {cfg.calibration_method} calibration on {len(calibration)} train images{available}, "
            f"activations {cfg.activation_type}, weights {cfg.weight_type}"
            f"{' per-channel' if cfg.per_channel else ' per-tensor'}",
        )
        target = out / INT8_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        done = quantize_int8(source, target, reader, cfg)

        model = onnx_tools.load_model(target)
        labels = split["classes"]
        onnx_tools.embed_metadata(model, labels, pre, **{"edgetl.precision": "int8"})
        onnx_tools.check(model, INT8_FILE)
        onnx_tools.save_model(model, target)
        try:
            with OnnxRuntimeRunner(target) as runner:
                runner.infer_any_batch(pre.batch(calibration[:1]))
        except Exception as error:
            raise VerificationError(f"{INT8_FILE}: quantized model does not run in ONNX Runtime ({error})") from None

        ops = onnx_tools.op_census(model)
        record = {
            "settings": cfg.model_dump(mode="json"),
            "format": "QDQ",
            "calibration_images": [str(p.relative_to(split["root"])) for p in calibration],
            "ops": ops,
            "size_bytes": target.stat().st_size,
            "fp32_size_bytes": source.stat().st_size,
            "float_nodes": done["float_nodes"],
            "notes": done["notes"],
        }
        write_json_atomic(out / QUANTIZATION_FILE, record)
        ratio = record["size_bytes"] / record["fp32_size_bytes"]
        ctx.log.stage(self.name, f"int8 model {record['size_bytes'] / 1e6:.2f} MB ({ratio:.2f}x the fp32 file)")
        return {
            "int8": {
                "calibration_images": len(calibration),
                "quantized_nodes": ops.get("QuantizeLinear", 0),
                "size_bytes": record["size_bytes"],
                "size_ratio": ratio,
                "settings": record["settings"],
            }
        }
