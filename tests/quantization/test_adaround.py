"""AdaRound: weights whose nearest rounding errs the same way in every filter; adaptive rounding cancels it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgetl.quantization.accuracy_aware import infer_logits, model_feed
from edgetl.quantization.adaround import AdaRoundSettings, adaround, mismatched_weights
from edgetl.quantization.calibration import compute_ranges
from edgetl.quantization.qdq import QuantSettings, quantize_with_ranges
from tests.quantization.synthetic import conv_relu_mix_model
from tests.quantization.test_calibration import ArrayReader

STEP = 1 / 64  # the 7-bit weight step when each filter's largest weight is 1.0


def _model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    # Every small weight sits 0.55 of a step above a level: nearest rounding moves each one up by 0.45 of a
    # step, and on positive inputs those errors add up instead of cancelling.
    levels = rng.integers(-6, 6, (8, 4, 3, 3)).astype(np.float32)
    weight = ((levels + 0.55) * STEP).astype(np.float32)
    weight[:, 0, 1, 1] = 1.0
    mix = rng.normal(0, 0.5, (4, 8, 1, 1)).astype(np.float32)
    return conv_relu_mix_model(path, weight, mix, np.full(4, 0.1, np.float32))


def _sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(10 * np.log10((reference**2).sum() / ((reference - candidate) ** 2).sum()))


def _int8_scales(path: Path) -> list[np.ndarray]:
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]


def test_adaround_beats_nearest_rounding_and_survives_requantization(tmp_path: Path) -> None:
    prepared = _model(tmp_path / "model.onnx")
    rng = np.random.default_rng(1)
    calibration = rng.uniform(0, 1, (32, 4, 8, 8)).astype(np.float32)
    test = rng.uniform(0, 1, (64, 4, 8, 8)).astype(np.float32)
    ranges = compute_ranges(prepared, ArrayReader(calibration, 16), "minmax")
    settings = QuantSettings("uint8", "int8", per_channel=True, reduce_range=True)
    plain = tmp_path / "plain.onnx"
    quantize_with_ranges(prepared, plain, ranges, settings, [], model_feed(prepared, test))
    rounded_fp32, rounded = tmp_path / "adaround_fp32.onnx", tmp_path / "adaround.onnx"
    batches = [calibration[i : i + 16] for i in range(0, 32, 16)]
    record = adaround(prepared, rounded_fp32, ranges, settings, [], batches, tmp_path, AdaRoundSettings(iterations=200))
    quantize_with_ranges(rounded_fp32, rounded, ranges, settings, [], model_feed(prepared, test))

    first = record["layers"][0]
    assert first["node"] == "conv" and first["used"]
    assert first["adaround_mse"] < first["nearest_mse"] / 3, first
    # Quantizing the snapped fp32 model lands every weight on AdaRound's level, on the same scales.
    assert mismatched_weights(rounded, tmp_path / "adaround_int8.onnx") == 0
    assert mismatched_weights(rounded, plain) > 0
    for left, right in zip(_int8_scales(rounded), _int8_scales(plain), strict=True):
        assert np.array_equal(left, right)
    # On images it never saw, the int8 model comes closer to fp32.
    reference = infer_logits(prepared, test)
    before, after = _sqnr_db(reference, infer_logits(plain, test)), _sqnr_db(reference, infer_logits(rounded, test))
    assert after > before + 3, (before, after)
