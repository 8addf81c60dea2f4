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

from edgetl.errors import ProfileError, first_line
from edgetl.quantization.calibration import CalibrationResult, OneFeedReader

# Ops whose weights carry the model's compute; the ones the fallback may keep in float.
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class QuantSettings:
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    reduce_range: bool = True
    # TensorRT: zero points must be 0 (symmetric signed int8) and biases stay float (TensorRT fuses them).
    symmetric: bool = False


def prepare(source: Path, target: Path) -> list[str]:
    """Shape inference + graph cleanup that quantization wants; returns notes (empty when it worked)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
        return []
    except Exception as error:  # pre-processing is an optimization; quantize the raw model instead
        target.write_bytes(source.read_bytes())
        return [f"quant_pre_process skipped: {first_line(error)}"]


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


# Activations ONNX Runtime folds into the preceding compute op's output range when both are int8.
_FUSED_ACTIVATIONS = ("Clip", "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish")


def with_fused_activations(model: Any, float_nodes: list[str]) -> list[str]:
    """`float_nodes` plus the activation right after each of them.

    Left alone, the quantizer would keep a float conv's ReLU6 in int8 and quantize the conv's raw
    output (a range like -30..40) just to feed it: a few levels left for 0..6. Measured on digits:
    13 float convs without this lost 21 points on the tuning images; all-int8 lost 1.
    """
    selected = set(float_nodes)
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    extra = [
        consumer.name
        for node in model.graph.node
        if node.name in selected
        for output in node.output
        for consumer in consumers.get(output, [])
        if consumer.op_type in _FUSED_ACTIVATIONS and consumer.name not in selected
    ]
    return list(dict.fromkeys([*float_nodes, *extra]))


def quantize_with_ranges(
    prepared: Path,
    target: Path,
    ranges: CalibrationResult,
    settings: QuantSettings,
    float_nodes: list[str],
    sample_feed: dict[str, np.ndarray],
) -> list[str]:
    """Write the QDQ model for `prepared` with `float_nodes` in float; returns the nodes really kept in float.

    That list can be longer than asked: the activation after each float node (see
    `with_fused_activations`), and the producer of any float conv that ONNX Runtime would otherwise
    quantize behind our back (see `sandwiched_float_nodes`).
    """
    import onnx

    source = onnx.load(str(prepared), load_external_data=False)
    selected = with_fused_activations(source, float_nodes)
    for _ in range(_MAX_SANDWICH_ROUNDS):
        _quantize_static(prepared, target, ranges, settings, selected, sample_feed)
        sandwiched = sandwiched_float_nodes(onnx.load(str(target), load_external_data=False), selected)
        if not sandwiched:
            break
        selected = with_fused_activations(source, [*selected, *_producers(source, sandwiched)])
    return selected


_MAX_SANDWICH_ROUNDS = 8


def sandwiched_float_nodes(model: Any, float_nodes: list[str]) -> list[str]:
    """Float Conv/Gemm nodes that ONNX Runtime (>= 1.20) will silently run in int8 anyway.

    Its `WeightBiasQuantization` graph transformer gives per-tensor int8 weights to any float
    Conv/ConvTranspose/Gemm whose input comes from a per-tensor DequantizeLinear and whose output
    reaches a QuantizeLinear through ReLU/Clip only. Per-tensor weights on a depthwise conv are
    ruinous: on the digits model one such "float" node took the logits from 16 dB to 5 dB.
    """
    producers = {output: node for node in model.graph.node for output in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    selected = set(float_nodes)
    found = []
    for node in model.graph.node:
        if node.name not in selected or node.op_type not in ("Conv", "ConvTranspose", "Gemm"):
            continue
        parent = producers.get(node.input[0])
        if parent is None or parent.op_type != "DequantizeLinear":
            continue
        current = node
        while len(current.output) == 1 and len(consumers.get(current.output[0], [])) == 1:
            current = consumers[current.output[0]][0]
            if current.op_type == "QuantizeLinear":
                found.append(node.name)
                break
            if current.op_type not in ("Relu", "Clip"):
                break
    return found


def _producers(model: Any, names: list[str]) -> list[str]:
    """For each node, the node computing its input, looking through ReLU/Clip to the compute node behind them."""
    producers = {output: node for node in model.graph.node for output in node.output}
    by_name = {node.name: node for node in model.graph.node}
    found = []
    for name in names:
        parent = producers.get(by_name[name].input[0])
        while parent is not None and parent.op_type in ("Relu", "Clip"):
            found.append(parent.name)
            parent = producers.get(parent.input[0])
        if parent is not None:
            found.append(parent.name)
    return found


def _quantize_static(
    prepared: Path,
    target: Path,
    ranges: CalibrationResult,
    settings: QuantSettings,
    float_nodes: list[str],
    sample_feed: dict[str, np.ndarray],
) -> None:
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
            # TensorRT: Q/DQ on the inputs of compute ops only, as NVIDIA's quantization toolkits place them.
            # Quantizing conv outputs before ReLU6 with a symmetric range (+-100) wastes most of the int8
            # levels: measured on digits, logit SQNR 3.2 dB that way vs 12.2 dB with inputs only.
            op_types_to_quantize=list(COMPUTE_OPS) if settings.symmetric else None,
            extra_options={
                "OpTypesToExcludeOutputQuantization": list(COMPUTE_OPS) if settings.symmetric else [],
                "CalibTensorRangeSymmetric": False,
                "TensorQuantOverrides": ranges.overrides(),
                "ActivationSymmetric": settings.symmetric,
                "WeightSymmetric": True if settings.symmetric else None,
                "QuantizeBias": not settings.symmetric,
            },
        )


def dequantized_read(model: Any, tensor: str) -> str:
    """What consumers of `tensor` read: its DequantizeLinear(QuantizeLinear(...)) output if there is one."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for q in consumers.get(tensor, []):
        if q.op_type == "QuantizeLinear":
            for dq in consumers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    return dq.output[0]
    return tensor


def quantized_compute_nodes(model: Any) -> list[str]:
    """Names of compute nodes that read a dequantized weight, i.e. run in int8."""
    produced_by_dq = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in COMPUTE_OPS and len(node.input) > 1 and node.input[1] in produced_by_dq
    ]
