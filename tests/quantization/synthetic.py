"""A tiny ONNX classifier that static int8 breaks on purpose, built without torch.

Conv `wide` puts one channel at ~1000x the scale of the others; `mix` reads only the small
channels. Per-tensor activation quantization of `wide`'s output then rounds the small channels
to a handful of levels, so int8 predictions go wrong unless `mix` reads float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = 4


def build_sensitive_model(path: Path, seed: int = 0) -> Path:
    """Write the model; its head bias is centred so that every class is predicted for some images."""
    import onnxruntime as ort

    _build(path, seed, np.zeros(CLASSES, np.float32))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": images(256, seed=99)})[0]
    return _build(path, seed, -logits.mean(axis=0).astype(np.float32))


def _build(path: Path, seed: int, head_bias: np.ndarray) -> Path:
    rng = np.random.default_rng(seed)
    stem = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    wide = rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)
    wide[0] *= 2000.0  # the outlier channel
    mix = rng.normal(0, 1.0, (16, 8, 1, 1)).astype(np.float32)
    mix[:, 0] = 0.0  # ... which the next layer ignores
    head = rng.normal(0, 1.0, (CLASSES, 16)).astype(np.float32)
    inits = [
        numpy_helper.from_array(stem, "stem_w"),
        numpy_helper.from_array(wide, "wide_w"),
        numpy_helper.from_array(mix, "mix_w"),
        numpy_helper.from_array(head, "head_w"),
        numpy_helper.from_array(head_bias, "head_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "stem_w"], ["s"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["s_relu"], name="stem_relu"),
        helper.make_node("Conv", ["s_relu", "wide_w"], ["w"], name="wide"),
        helper.make_node("Conv", ["w", "mix_w"], ["m"], name="mix"),
        helper.make_node("Relu", ["m"], ["m_relu"], name="mix_relu"),
        helper.make_node("GlobalAveragePool", ["m_relu"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "head_w", "head_b"], ["logits"], name="head", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "sensitive",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def images(count: int, seed: int = 1) -> np.ndarray:
    """Noise plus a per-image colour offset, so the classifier's answer varies between images."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, 1.0, (count, 3, 1, 1))
    return (rng.uniform(-1, 1, (count, 3, 16, 16)) + offsets).astype(np.float32)


def conv_relu_mix_model(path: Path, weight: np.ndarray, mix: np.ndarray, mix_bias: np.ndarray, side: int = 8) -> Path:
    """Conv(weight, 3x3, pad 1) -> Relu -> 1x1 Conv(mix) -> global pool, prepared for quantization.

    The weight-rounding tests (bias correction, AdaRound) give `weight` values whose nearest int8
    rounding errs in a known way and check that their technique undoes it.
    """
    from edgetl.quantization.qdq import prepare

    inits = [
        numpy_helper.from_array(weight.astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(weight.shape[0], np.float32), "b"),
        numpy_helper.from_array(mix.astype(np.float32), "w2"),
        numpy_helper.from_array(mix_bias.astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="mix"),
        helper.make_node("GlobalAveragePool", ["c2"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["logits"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes,
        "weight_rounding",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", weight.shape[1], side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", mix.shape[0]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    prepared = path.with_name("prepared.onnx")
    prepare(path, prepared)
    return prepared
