"""Empirical bias correction (Nagel et al., 2019, "Data-Free Quantization"): path in, path out.

Int8 rounding of a conv's weights and inputs shifts the *mean* of its output channels, and on
depthwise-heavy nets (EfficientNet-Lite, MobileNet) those shifts add up through the blocks. The
shift is measurable: run the fp32 and the int8 model on calibration images (train, never val),
average each quantized conv's output per channel, and fold the difference into the conv's float
bias; quantizing the corrected fp32 model again then removes it. Corrections upstream change what
downstream convs see, so this repeats for a few passes, each on the model the last one produced.

The int8 side is measured where the next layer reads it (after the conv's output Q/DQ, which also
applies a ReLU6 that ONNX Runtime folded into the range). Exposing those tensors keeps ONNX Runtime
from fusing that conv into an integer kernel: what is measured is the QDQ arithmetic. The fused kernels compute the
same except where u8s8 products saturate int16 (x86 without VNNI and `reduce_range: false`), so
bias correction is only as exact as `reduce_range: auto` makes the kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.quantization.calibration import CalibrationResult
from edgetl.quantization.qdq import QuantSettings, quantize_with_ranges, quantized_compute_nodes

PASSES = 3  # measured on a two-conv model: 6 %, 3 %, then < 0.01 % of the channel means


def _channel_means(model: Any, outputs: list[str], batches: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) means of `outputs` over every image of `batches`."""
    from edgetl.quantization.accuracy_aware import _session, _with_outputs

    session = _session(_with_outputs(model, outputs))
    name = session.get_inputs()[0].name
    sums: dict[str, np.ndarray] = {}
    count = 0
    for batch in batches:
        values = session.run(outputs, {name: batch})
        for tensor, value in zip(outputs, values, strict=True):
            reduced = value.astype(np.float64).reshape(value.shape[0], value.shape[1], -1).mean(axis=2).sum(axis=0)
            sums[tensor] = sums.get(tensor, 0.0) + reduced
        count += len(batch)
    return {tensor: total / count for tensor, total in sums.items()}


def _own_biases(model: Any) -> Any:
    """Give every Conv its own bias initializer: graph cleanup merges equal ones (e.g. two zero biases),
    and a correction for one conv must not move another."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 2 and users.get(node.input[2], 0) > 1:
            copy = numpy_helper.from_array(numpy_helper.to_array(initializers[node.input[2]]), f"{node.name}_bias")
            model.graph.initializer.append(copy)
            node.input[2] = copy.name
    used = {name for node in model.graph.node for name in node.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    return model


def correct_biases(
    prepared: Path,
    target_fp32: Path,
    ranges: CalibrationResult,
    settings: QuantSettings,
    float_nodes: list[str],
    batches: list[np.ndarray],
    work: Path,
    passes: int = PASSES,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Write `target_fp32`: `prepared` with conv biases corrected for int8's mean shift.

    Quantize `target_fp32` with the same ranges and float nodes to get the corrected int8 model.
    Shifts are measured where the int8 model reads a conv's result (after a fused ReLU, if any)
    and folded into its bias. Returns, per pass, the mean and largest |shift| relative to the
    channel means.
    """
    import onnx
    from onnx import numpy_helper

    from edgetl.quantization.accuracy_aware import _as_read

    fp32_model = _own_biases(onnx.load(str(prepared)))
    initializers = {init.name: init for init in fp32_model.graph.initializer}
    record: dict[str, Any] = {"passes": [], "images": int(sum(len(b) for b in batches))}
    onnx.save(fp32_model, str(target_fp32))
    current = target_fp32
    for index in range(passes):
        quantized_path = work / f"bias_pass{index}.onnx"
        quantize_with_ranges(current, quantized_path, ranges, settings, float_nodes, {"input": batches[0][:1]})
        quantized = onnx.load(str(quantized_path))
        nodes = {n.name: n for n in quantized.graph.node}
        convs = [
            nodes[name]
            for name in quantized_compute_nodes(quantized)
            if nodes[name].op_type == "Conv" and len(nodes[name].input) > 2
        ]
        outputs = [conv.output[0] for conv in convs]
        # What the next layer reads in the int8 model: DQ(Q(conv output)). Where ONNX Runtime folded a
        # ReLU/ReLU6 into the conv, the conv's own output is unclipped (the Q range clips it), while the
        # fp32 tensor of that name is after the activation: comparing those would "correct" by the whole
        # negative part (measured: DTD val agreement 14.8 %).
        read = {out: _as_read(quantized, out) for out in outputs}
        reference = _channel_means(onnx.load(str(prepared)), outputs, batches)
        measured_read = _channel_means(quantized, sorted(set(read.values())), batches)
        measured = {out: measured_read[read[out]] for out in outputs}
        shifts = []
        fp32_nodes = {n.name: n for n in fp32_model.graph.node}
        for conv in convs:
            bias_name = fp32_nodes[conv.name].input[2]
            bias = numpy_helper.to_array(initializers[bias_name]).astype(np.float64)
            shift = reference[conv.output[0]] - measured[conv.output[0]]
            initializers[bias_name].CopyFrom(numpy_helper.from_array((bias + shift).astype(np.float32), bias_name))
            scale = np.abs(reference[conv.output[0]]).mean() + 1e-6
            shifts.append(float(np.abs(shift).mean() / scale))
        onnx.save(fp32_model, str(target_fp32))
        step = {"convs": len(convs), "mean_relative_shift": float(np.mean(shifts)) if shifts else 0.0}
        step["max_relative_shift"] = float(np.max(shifts)) if shifts else 0.0
        record["passes"].append(step)
        log(
            f"bias correction pass {index + 1}: {len(convs)} convs, mean |shift| {step['mean_relative_shift']:.2%} "
            "of the channel means"
        )
    return record
