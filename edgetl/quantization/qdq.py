"""Static int8 QDQ quantization from precomputed activation ranges (path in, path out).

QDQ keeps the graph portable: ONNX Runtime fuses Q/DQ pairs into integer kernels on CPU, and
TensorRT builds explicit-precision int8 engines from the same file. Ranges come from
`edgetl.quantization.calibration` and are handed to onnxruntime as `TensorQuantOverrides`, so a
re-quantization (different float nodes) needs no new calibration pass.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import ProfileError
from edgetl.quantization.calibration import CalibrationResult, OneFeedReader

# Ops whose weights carry the model's compute; the ones the fallback may keep in float.
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class QuantSettings:
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    reduce_range: bool = True


def prepare(source: Path, target: Path) -> list[str]:
    """Shape inference + graph cleanup that quantization wants; returns notes (empty when it worked)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
        return []
    except Exception as error:  # pre-processing is an optimization; quantize the raw model instead
        target.write_bytes(source.read_bytes())
        return [f"quant_pre_process skipped: {str(error).splitlines()[0]}"]


def resolve_float_nodes(model: Any, keep_float: list[str], exclude_nodes: list[str]) -> list[str]:
    """Resolve `keep_float` layer roles and `exclude_nodes` to node names of `model`."""
    nodes = list(model.graph.node)
    names = {node.name for node in nodes}
    unknown = [name for name in exclude_nodes if name not in names]
    if unknown:
        examples = ", ".join(sorted(names)[:5])
        raise ProfileError(
            f"optimize.int8.exclude_nodes: no node named {', '.join(unknown)} (nodes are named like {examples})"
        )
    graph_inputs = {value.name for value in model.graph.input}
    selected = list(exclude_nodes)
    if "first_conv" in keep_float:
        selected += [n.name for n in nodes if n.op_type == "Conv" and graph_inputs & set(n.input)][:1]
    if "classifier" in keep_float:
        selected += [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
    return list(dict.fromkeys(selected))


def quantize_with_ranges(
    prepared: Path,
    target: Path,
    ranges: CalibrationResult,
    settings: QuantSettings,
    float_nodes: list[str],
    sample_feed: dict[str, np.ndarray],
) -> None:
    """Write the QDQ model for `prepared` with activation ranges from `ranges`, `float_nodes` in float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    with tempfile.TemporaryDirectory(prefix="edgetl-quant-"):
        quantize_static(
            str(prepared),
            str(target),
            OneFeedReader(sample_feed),  # quantize_static wants a reader even when every range is given
            quant_format=QuantFormat.QDQ,
            activation_type=types[settings.activation_type],
            weight_type=types[settings.weight_type],
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            calibrate_method=CalibrationMethod.MinMax,  # replaced by the overrides below
            nodes_to_exclude=list(float_nodes),
            extra_options={"CalibTensorRangeSymmetric": False, "TensorQuantOverrides": ranges.overrides()},
        )


def quantized_compute_nodes(model: Any) -> list[str]:
    """Names of compute nodes that read a dequantized weight, i.e. run in int8."""
    produced_by_dq = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in COMPUTE_OPS and len(node.input) > 1 and node.input[1] in produced_by_dq
    ]
