"""Compute accounting from the shipped artefact: MACs and parameters, the measured GEMM peak, utilization.

Everything here reads the ONNX file or measures ONNX Runtime on this machine, so the numbers describe what is
deployed rather than the training checkpoint or a vendor datasheet. No torch import: this runs on devices.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

# Compute ops and the input indices that carry data (activations or weights), not scales/zero points.
# com.microsoft ops are the ones ORT's QOperator quantizer and graph optimizer write into saved models.
_DATA_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (0, 1, 2),
    "ConvTranspose": (0, 1, 2),
    "Gemm": (0, 1, 2),
    "MatMul": (0, 1),
    "ConvInteger": (0, 1),
    "MatMulInteger": (0, 1),
    "QLinearConv": (0, 3, 8),
    "QLinearMatMul": (0, 3),
    "com.microsoft:QGemm": (0, 3, 6),
    "com.microsoft:FusedConv": (0, 1, 2),
    "com.microsoft:FusedGemm": (0, 1, 2),
    "com.microsoft:FusedMatMul": (0, 1),
}
# Ops a weight may pass through between its initializer and the compute op (QDQ models, exporter leftovers).
_PASS_THROUGH = {"DequantizeLinear", "Identity", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze"}
# Index of the weight input, to read the kernel shape from.
_WEIGHT_INPUT = {"Conv": 1, "FusedConv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3}


def _prod(values: Any) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result


def _fix_batch(model: Any, batch: int) -> None:
    """Concrete batch dim on the inputs, and no stale symbolic shapes, so inference yields numbers."""
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) and (dims[0].dim_param or dims[0].dim_value <= 0):
            dims[0].Clear()
            dims[0].dim_value = batch
    del model.graph.value_info[:]
    for value in model.graph.output:
        if value.type.HasField("tensor_type"):
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param:
                    dim.Clear()


def _shape_map(model: Any) -> dict[str, list[int] | None]:
    """Tensor name -> concrete shape (None where any dim is unknown)."""
    shapes: dict[str, list[int] | None] = {}
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        if value.name in shapes or not value.type.HasField("tensor_type"):
            continue
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            shapes[value.name] = None
            continue
        dims = tensor_type.shape.dim
        known = all(d.HasField("dim_value") for d in dims)
        shapes[value.name] = [d.dim_value for d in dims] if known else None
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = list(attr.t.dims)
    return shapes


def _op_key(node: Any) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"


def _node_macs(node: Any, shapes: dict[str, list[int] | None]) -> int | None:
    """MACs of one compute node from inferred shapes; None when a needed shape is unknown."""

    def shape(index: int) -> list[int] | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        return shapes.get(node.input[index])

    def attr(name: str) -> int:
        return next((a.i for a in node.attribute if a.name == name), 0)

    out = shapes.get(node.output[0]) if node.output else None
    op = node.op_type
    if op in ("Conv", "FusedConv", "ConvInteger", "QLinearConv"):
        weight = shape(_WEIGHT_INPUT[op])
        if out is None or weight is None:
            return None
        return _prod(out) * _prod(weight[1:])  # weight is [C_out, C_in/group, k...]
    if op == "ConvTranspose":
        x, weight = shape(0), shape(1)
        if x is None or weight is None:
            return None
        return _prod(x) * _prod(weight[1:])  # each input element scatters into C_out/group x k... outputs
    if op in ("Gemm", "FusedGemm", "QGemm"):
        # From the operands alone: contrib ops such as QGemm have no ONNX shape inference for their output.
        a, b = shape(0), shape(3 if op == "QGemm" else 1)
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            return None
        m, k = (a[1], a[0]) if attr("transA") else (a[0], a[1])
        return m * k * (b[0] if attr("transB") else b[1])
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul"):
        a = shape(0)
        if out is None or a is None or not a:
            return None
        if len(a) >= 2 and op == "FusedMatMul" and attr("transA"):
            return _prod(out) * a[-2]
        return _prod(out) * a[-1]
    return None


def _shapes_from_run(model: Any, model_path: Path, names: list[str]) -> dict[str, list[int]]:
    """Shapes of `names` from one ONNX Runtime run on zeros (graph as written); {} when it cannot run."""
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
        from onnx import external_data_helper, helper

        model = onnx.ModelProto.FromString(model.SerializeToString())
        if any(external_data_helper.uses_external_data(t) for t in model.graph.initializer):
            external_data_helper.load_external_data_for_model(model, str(Path(model_path).parent))
        outputs = {value.name for value in model.graph.output}
        model.graph.output.extend(helper.ValueInfoProto(name=name) for name in names if name not in outputs)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor name
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        shapes = _shape_map(model)
        feeds = {}
        for value in session.get_inputs():
            dims = shapes.get(value.name)
            if dims is None:
                return {}
            dtype = helper.tensor_dtype_to_np_dtype(
                next(v for v in model.graph.input if v.name == value.name).type.tensor_type.elem_type
            )
            feeds[value.name] = np.zeros(dims, dtype=dtype)
        results = session.run(names, feeds)
    except Exception:  # best effort: the statically inferred counts stand and unresolved_nodes says what is missing
        return {}
    return {name: list(np.shape(result)) for name, result in zip(names, results, strict=True)}


def count_onnx_macs(model_path: Path, batch: int = 1) -> dict[str, Any]:
    """Multiply-accumulates and parameters of the ONNX graph at a given batch.

    Counted from the file that ships (float or int8 QDQ), so quantization or graph surgery cannot make the
    figure drift from what runs. Bias additions and elementwise ops are not counted (the usual convention).
    `unresolved_nodes` names compute nodes whose shapes could not be determined (their MACs are missing).
    """
    import onnx
    from onnx import helper, shape_inference

    if batch < 1:
        raise ValueError("batch must be >= 1")
    model = onnx.load(str(model_path), load_external_data=False)
    _fix_batch(model, batch)
    inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)

    producers = {out: node for node in inferred.graph.node for out in node.output}
    initializers = {init.name: init for init in inferred.graph.initializer}
    constants = {
        node.output[0]: next((a.t for a in node.attribute if a.name == "value"), None)
        for node in inferred.graph.node
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx")
    }

    def source_tensor(name: str) -> Any | None:
        """Follow dequantize/reshape-like ops back to the initializer (or Constant) a weight comes from."""
        seen = 0
        while seen < 16:
            if name in initializers:
                return initializers[name]
            if constants.get(name) is not None:
                return constants[name]
            node = producers.get(name)
            if node is None or node.op_type not in _PASS_THROUGH or not node.input:
                return None
            name = node.input[0]  # data input; scale/zero point/shape inputs are not parameters
            seen += 1
        return None

    def tally(shapes: dict[str, list[int] | None]) -> tuple[dict[str, int], list[str]]:
        macs_by_op: dict[str, int] = {}
        unresolved: list[str] = []
        for node in compute_nodes:
            macs = _node_macs(node, shapes)
            if macs is None:
                unresolved.append(node.name or f"{node.op_type}->{node.output[0]}")
            else:
                macs_by_op[node.op_type] = macs_by_op.get(node.op_type, 0) + macs
        return macs_by_op, unresolved

    compute_nodes = [node for node in inferred.graph.node if _op_key(node) in _DATA_INPUTS]
    param_tensors: dict[int, Any] = {}
    for node in compute_nodes:
        for index in _DATA_INPUTS[_op_key(node)]:
            if index < len(node.input) and node.input[index]:
                tensor = source_tensor(node.input[index])
                if tensor is not None:
                    param_tensors[id(tensor)] = tensor  # shared weights count once

    macs_by_op, unresolved = tally(_shape_map(inferred))
    shape_source = "onnx shape inference"
    if unresolved:
        # ONNX's inference stops at contrib ops (FusedConv, QGemm, QLinearGlobalAveragePool...) that ORT
        # writes into saved models: take the missing shapes from one ORT run on zeros instead.
        needed = {name for node in compute_nodes for name in (*node.input, *node.output[:1]) if name}
        known = _shape_map(inferred)
        missing = sorted(name for name in needed if known.get(name) is None)
        measured = _shapes_from_run(model, Path(model_path), missing)
        if measured:
            known.update(measured)
            macs_by_op, unresolved = tally(known)
            shape_source = "onnx shape inference + one onnxruntime run on zeros (contrib ops)"

    weight_bytes = 0
    for init in inferred.graph.initializer:
        itemsize = helper.tensor_dtype_to_np_dtype(init.data_type).itemsize if init.data_type else 0
        weight_bytes += _prod(init.dims) * itemsize
    return {
        "batch": batch,
        "macs": sum(macs_by_op.values()),
        "macs_by_op": dict(sorted(macs_by_op.items())),
        "parameters": sum(_prod(t.dims) for t in param_tensors.values()),
        "weight_bytes": weight_bytes,
        "unresolved_nodes": unresolved,
        "shape_source": shape_source,
    }


def _gemm_model(size: int, precision: str) -> tuple[Any, Any]:
    """A one-node MatMul model (weights as initializer, as in a real model) and its input."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if precision == "fp32":
        weight = numpy_helper.from_array(rng.standard_normal((size, size), dtype=np.float32), "w")
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        x_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
        feed = rng.standard_normal((size, size), dtype=np.float32)
    elif precision == "int8":
        # MatMulInteger(uint8, int8) runs on MLAS's u8s8 integer GEMM, the kernel QLinearConv/QDQ-fused
        # MatMul use; the raw op keeps (de)quantization overhead out of the peak.
        weight = numpy_helper.from_array(rng.integers(-127, 128, (size, size), dtype=np.int8), "w")
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
        x_type, y_type = TensorProto.UINT8, TensorProto.INT32
        feed = rng.integers(0, 256, (size, size), dtype=np.uint8)
    else:
        raise ValueError(f"precision must be 'fp32' or 'int8', not {precision!r}")
    graph = helper.make_graph(
        [node],
        f"gemm_peak_{precision}",
        [helper.make_tensor_value_info("x", x_type, [size, size])],
        [helper.make_tensor_value_info("y", y_type, [size, size])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)  # loadable by older onnxruntime releases too
    onnx.checker.check_model(model)
    return model, feed


def measure_gemm_peak(threads: int = 1, precision: str = "fp32", size: int = 512, seconds: float = 1.0) -> dict:
    """Attainable MAC/s of ONNX Runtime's own GEMM kernel on this machine (fp32 or uint8 x int8).

    A measured ceiling, not a datasheet one: utilization against it says how much of what ORT can actually
    do a model gets, which is what a deployment can improve.
    """
    import onnxruntime as ort

    if threads < 1 or size < 1 or seconds <= 0:
        raise ValueError("threads and size must be >= 1 and seconds > 0")
    model, feed = _gemm_model(size, precision)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {"x": feed}

    warm_until = time.perf_counter() + min(0.2, seconds * 0.25)
    runs = 0
    while runs < 2 or time.perf_counter() < warm_until:
        session.run(None, feeds)
        runs += 1

    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 5 or time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    chunks = 5
    per_chunk = len(times) // chunks
    medians = [statistics.median(times[i * per_chunk : (i + 1) * per_chunk]) for i in range(chunks)]
    best = min(medians)
    macs = size**3
    rate = macs / best
    kind = "float32 x float32 (MatMul)" if precision == "fp32" else "uint8 x int8 -> int32 (MatMulInteger)"
    return {
        "macs_per_second": rate,
        "gmacs_per_second": rate / 1e9,
        "precision": precision,
        "threads": threads,
        "size": size,
        "runs": len(times),
        "onnxruntime": ort.__version__,
        "method": (
            f"best sustained MatMul M=K=N={size} in ONNX Runtime {ort.__version__} CPU, {threads} thread"
            f"{'s' if threads != 1 else ''}, {kind}, weights as initializer: best of {chunks} chunk medians "
            f"over {len(times)} timed runs after warm-up"
        ),
    }


def compute_utilization(macs: int, latency_ms: float, peak: dict) -> dict:
    """Fraction of the measured GEMM peak a model reaches: low values point at memory-bound or tiny layers."""
    peak_rate = float(peak["macs_per_second"])
    if latency_ms <= 0 or peak_rate <= 0:
        raise ValueError("latency_ms and the peak's macs_per_second must be positive")
    achieved = macs / (latency_ms / 1000.0)
    return {
        "macs": int(macs),
        "latency_ms": float(latency_ms),
        "achieved_macs_per_second": achieved,
        "peak_macs_per_second": peak_rate,
        "fraction": achieved / peak_rate,
        "peak_method": peak.get("method", ""),
    }
