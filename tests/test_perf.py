"""edgetl.perf: exact MAC/parameter counts on hand-built graphs, measured peaks, peak memory, utilization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetl.measure.compute import compute_utilization, count_onnx_macs, measure_gemm_peak
from edgetl.measure.memory import measure_peak_memory

# Conv 3->8 k3 pad1 on 3x32x32 -> 8x32x32; depthwise 8 k3 stride2 pad1 -> 8x16x16; GAP; Gemm 8->10.
CONV_MACS = 8 * 32 * 32 * 3 * 3 * 3
DW_MACS = 8 * 16 * 16 * 1 * 3 * 3
GEMM_MACS = 8 * 10
TINY_PARAMS = (8 * 3 * 9 + 8) + (8 * 1 * 9 + 8) + (10 * 8 + 10)


def _tiny_cnn(batch: int | str = "batch") -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.2, name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node(
            "Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=8
        ),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        initializer=[
            init("w1", (8, 3, 3, 3)),
            init("b1", (8,)),
            init("w2", (8, 1, 3, 3)),
            init("b2", (8,)),
            init("w3", (10, 8)),
            init("b3", (10,)),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def tiny_fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("perf") / "tiny_fp32.onnx"
    onnx.save(_tiny_cnn(), str(path))
    return path


def _quantize(src: Path, dst: Path, fmt: str) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.batches = iter([{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return dst


def test_exact_macs_and_parameters(tiny_fp32: Path) -> None:
    result = count_onnx_macs(tiny_fp32)
    assert result["batch"] == 1
    assert result["macs_by_op"] == {"Conv": CONV_MACS + DW_MACS, "Gemm": GEMM_MACS}
    assert result["macs"] == CONV_MACS + DW_MACS + GEMM_MACS
    assert result["parameters"] == TINY_PARAMS
    assert result["weight_bytes"] == TINY_PARAMS * 4
    assert result["unresolved_nodes"] == []
    # The symbolic batch dim is fixed to the requested batch: MACs scale, parameters do not.
    four = count_onnx_macs(tiny_fp32, batch=4)
    assert four["macs"] == 4 * result["macs"] and four["parameters"] == TINY_PARAMS


def test_matmul_convtranspose_and_integer_ops(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["a", "wm"], ["m"]),  # [2,4,5,6] x [6,7] -> [2,4,5,7]
        helper.make_node("ConvTranspose", ["t", "wt"], ["ct"], kernel_shape=[3, 3]),  # [1,4,5,5] -> [1,2,7,7]
        helper.make_node("MatMulInteger", ["q", "wq"], ["mi"]),  # [3,6] x [6,5]
        helper.make_node("MatMul", ["a", "b"], ["ab"]),  # activation x activation: MACs, no parameters
    ]
    graph = helper.make_graph(
        nodes,
        "ops",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4, 5, 6]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 4, 6, 3]),
            helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4, 5, 5]),
            helper.make_tensor_value_info("q", TensorProto.UINT8, [3, 6]),
        ],
        [
            helper.make_tensor_value_info(name, elem, None)
            for name, elem in (
                ("m", TensorProto.FLOAT),
                ("ct", TensorProto.FLOAT),
                ("mi", TensorProto.INT32),
                ("ab", TensorProto.FLOAT),
            )
        ],
        initializer=[
            numpy_helper.from_array(rng.standard_normal((6, 7)).astype(np.float32), "wm"),
            numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "wt"),
            numpy_helper.from_array(rng.integers(-5, 5, (6, 5)).astype(np.int8), "wq"),
        ],
    )
    path = tmp_path / "ops.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = count_onnx_macs(path)
    assert result["macs_by_op"] == {
        "ConvTranspose": 4 * 5 * 5 * 2 * 3 * 3,
        "MatMul": 2 * 4 * 5 * 7 * 6 + 2 * 4 * 5 * 3 * 6,
        "MatMulInteger": 3 * 5 * 6,
    }
    assert result["parameters"] == 6 * 7 + 4 * 2 * 9 + 6 * 5
    assert result["weight_bytes"] == (6 * 7 + 4 * 2 * 9) * 4 + 6 * 5


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_quantized_model_counts_like_float(tiny_fp32: Path, tmp_path: Path, fmt: str) -> None:
    quantized = _quantize(tiny_fp32, tmp_path / f"tiny_{fmt}.onnx", fmt)
    ops = {node.op_type for node in onnx.load(str(quantized)).graph.node}
    assert ("DequantizeLinear" in ops) if fmt == "qdq" else ("QLinearConv" in ops)
    floating, integer = count_onnx_macs(tiny_fp32, batch=2), count_onnx_macs(quantized, batch=2)
    assert integer["macs"] == floating["macs"] == 2 * (CONV_MACS + DW_MACS + GEMM_MACS)
    assert integer["parameters"] == floating["parameters"] == TINY_PARAMS
    assert integer["unresolved_nodes"] == []
    assert integer["weight_bytes"] < floating["weight_bytes"]


def test_ort_optimized_model_with_contrib_ops(tiny_fp32: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tiny_fp32), options, providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node}
    assert "FusedConv" in ops  # Conv+Relu fused into a com.microsoft op that ONNX shape inference does not know
    result = count_onnx_macs(Path(options.optimized_model_filepath))
    assert result["macs"] == CONV_MACS + DW_MACS + GEMM_MACS
    assert result["parameters"] == TINY_PARAMS and result["unresolved_nodes"] == []


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_gemm_peak_is_measured(precision: str) -> None:
    peak = measure_gemm_peak(threads=1, precision=precision, size=256, seconds=0.2)
    assert peak["macs_per_second"] > 0 and peak["gmacs_per_second"] == pytest.approx(peak["macs_per_second"] / 1e9)
    assert peak["precision"] == precision and peak["threads"] == 1 and peak["size"] == 256
    assert "M=K=N=256" in peak["method"] and "1 thread" in peak["method"]
    assert ("int8" in peak["method"]) == (precision == "int8")


def test_gemm_peak_rejects_unknown_precision() -> None:
    with pytest.raises(ValueError):
        measure_gemm_peak(precision="fp16", size=8, seconds=0.01)


def test_peak_memory_of_fresh_process(tiny_fp32: Path) -> None:
    ballast = np.ones(400 * 1024 * 1024 // 8)  # a parent bigger than the child: its RSS must not leak into the figure
    result = measure_peak_memory(tiny_fp32, batch=2, input_shape=[3, 32, 32])
    assert result["peak_rss_bytes"] < ballast.nbytes
    del ballast
    assert result["runtime"] == "onnxruntime" and result["batch"] == 2
    assert result["input_shapes"] == {"input": [2, 3, 32, 32]}
    assert result["peak_rss_bytes"] > 10 * 1024 * 1024
    assert 0 <= result["model_rss_bytes"] <= result["peak_rss_bytes"]
    assert "ru_maxrss" in result["method"] and "fresh process" in result["method"]


def test_peak_memory_failure_raises_with_stderr(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="peak-memory child failed"):
        measure_peak_memory(bogus)


def test_utilization_arithmetic() -> None:
    peak = {"macs_per_second": 4e10, "method": "best sustained MatMul"}
    result = compute_utilization(400_000_000, 20.0, peak)
    assert result["achieved_macs_per_second"] == pytest.approx(2e10)
    assert result["peak_macs_per_second"] == 4e10
    assert result["fraction"] == pytest.approx(0.5)
    assert result["peak_method"] == "best sustained MatMul"
    with pytest.raises(ValueError):
        compute_utilization(1, 0.0, peak)
