"""Empirical bias correction: a conv whose small weights all round to zero loses a known mean; it comes back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgetl.quantization.accuracy_aware import infer_logits, model_feed
from edgetl.quantization.bias_correction import correct_biases
from edgetl.quantization.calibration import compute_ranges
from edgetl.quantization.qdq import QuantSettings, quantize_with_ranges
from tests.quantization.synthetic import conv_relu_mix_model
from tests.quantization.test_calibration import ArrayReader


def _model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    weight = np.full((4, 3, 3, 3), 0.003, np.float32)  # 0.19 of a 7-bit weight step: every one rounds to zero
    weight[:, 0, 1, 1] = 1.0  # one large weight per filter sets the per-channel scale (1/63)
    mix = rng.normal(0, 1, (4, 4, 1, 1)).astype(np.float32)
    return conv_relu_mix_model(path, weight, mix, np.zeros(4, np.float32))


def test_bias_correction_restores_the_mean_that_rounding_removed(tmp_path: Path) -> None:
    prepared = _model(tmp_path / "model.onnx")
    rng = np.random.default_rng(1)
    # Inputs of both signs: the first conv's outputs go negative, and ONNX Runtime folds the ReLU after it into
    # the output quantization range, so the int8 conv output is unclipped where fp32's tensor is after ReLU.
    calibration = rng.uniform(-0.3, 1, (64, 3, 8, 8)).astype(np.float32)
    test = rng.uniform(-0.3, 1, (64, 3, 8, 8)).astype(np.float32)
    ranges = compute_ranges(prepared, ArrayReader(calibration, 16), "minmax")
    # 7-bit weights: full-range u8s8 saturates int16 on x86 CPUs without VNNI (where the corrected mean,
    # measured on the unfused QDQ graph, would not be what the fused integer kernels compute).
    settings = QuantSettings("uint8", "int8", per_channel=True, reduce_range=True)
    plain = tmp_path / "plain.onnx"
    quantize_with_ranges(prepared, plain, ranges, settings, [], model_feed(prepared, test))
    corrected_fp32, corrected = tmp_path / "corrected_fp32.onnx", tmp_path / "corrected.onnx"
    batches = [calibration[i : i + 16] for i in range(0, 64, 16)]
    record = correct_biases(prepared, corrected_fp32, ranges, settings, [], batches, tmp_path)
    quantize_with_ranges(corrected_fp32, corrected, ranges, settings, [], model_feed(prepared, test))

    reference = infer_logits(prepared, test)
    before = np.abs(infer_logits(plain, test).mean(0) - reference.mean(0)).max()
    after = np.abs(infer_logits(corrected, test).mean(0) - reference.mean(0)).max()
    assert before > 0.02, before
    assert after < before / 5, (before, after)
    assert record["convs"] == 2 and record["images"] == 64 and record["mean_relative_shift"] > 0
    # The corrected fp32 file is a float model: only biases changed, each conv its own (the graph cleanup had
    # merged the two zero biases into one initializer).
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(prepared)).graph.initializer}
    model = onnx.load(str(corrected_fp32))
    biases = [node.input[2] for node in model.graph.node if node.op_type == "Conv"]
    assert len(set(biases)) == 2
    for init in model.graph.initializer:
        if init.name not in biases:
            assert np.array_equal(numpy_helper.to_array(init), original[init.name])
