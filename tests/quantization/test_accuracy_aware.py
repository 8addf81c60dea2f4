"""Accuracy-aware int8: a model with a deliberately sensitive layer breaks, the fallback restores it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgetl.quantization.accuracy_aware import TuningSet, accuracy_aware_quantize, node_sensitivity, predict
from edgetl.quantization.calibration import compute_ranges
from edgetl.quantization.qdq import QuantSettings, quantize_with_ranges, quantized_compute_nodes
from tests.quantization.synthetic import images
from tests.quantization.test_calibration import ArrayReader, prepare_model


def _setup(tmp_path: Path) -> tuple[Path, object, TuningSet]:
    model = prepare_model(tmp_path)
    calibration, tuning_images = images(64, seed=1), images(128, seed=2)
    ranges = compute_ranges(model, ArrayReader(calibration, 16), "minmax")
    fp32 = predict(model, tuning_images)
    assert len(np.unique(fp32)) >= 3  # a real classifier, not a constant
    return model, ranges, TuningSet(tuning_images, fp32, fp32)


def test_sensitive_layer_breaks_int8_and_fallback_restores_the_budget(tmp_path: Path) -> None:
    model, ranges, tuning = _setup(tmp_path)
    target = tmp_path / "int8.onnx"
    messages: list[str] = []
    result = accuracy_aware_quantize(
        model, target, ranges, QuantSettings(), [], tuning, max_drop_points=5.0, log=messages.append
    )
    first, final = result.attempts[0], result.final
    assert first.float_nodes == [] and first.accuracy_drop_points > 30  # all-int8 collapses
    assert result.triggered and result.within_budget
    assert final.accuracy_drop_points <= 5.0 and final.agreement >= 0.95
    # The outlier channel is in wide's output, which mix reads: keeping either in float removes that
    # tensor's quantization, and the logit-based ranking finds one of them first.
    assert result.sensitivity[0].node in ("wide", "mix")
    assert {"wide", "mix"} & set(result.added_float_nodes)
    # The file on disk is the one that was measured, and it keeps the rest in int8.
    drop, agreement = tuning.drop_and_agreement(predict(target, tuning.batch))
    assert (drop, agreement) == (final.accuracy_drop_points, final.agreement)
    quantized = quantized_compute_nodes(onnx.load(str(target)))
    assert "wide" not in quantized and "stem" in quantized
    assert any("sensitivity" in m for m in messages)
    record = result.to_dict()
    assert record["attempts"][0]["within_budget"] is False and record["final"]["within_budget"] is True


def test_fallback_not_triggered_when_int8_is_fine(tmp_path: Path) -> None:
    model, ranges, tuning = _setup(tmp_path)
    result = accuracy_aware_quantize(
        model, tmp_path / "int8.onnx", ranges, QuantSettings(), ["wide", "mix"], tuning, max_drop_points=5.0
    )
    assert not result.triggered and result.within_budget and len(result.attempts) == 1
    assert result.added_float_nodes == [] and result.sensitivity == []


def test_sensitivity_ranks_the_outlier_layer_first(tmp_path: Path) -> None:
    model, ranges, tuning = _setup(tmp_path)
    int8 = tmp_path / "all.onnx"
    quantize_with_ranges(model, int8, ranges, QuantSettings(), [], {"input": tuning.batch[:1]})
    ranked = node_sensitivity(model, int8, tuning.batch[:16])
    assert [s.node for s in ranked][:1] == ["wide"]
    assert ranked[0].added_noise > 10 * ranked[-1].added_noise
    assert {s.node for s in ranked} <= {"stem", "wide", "mix", "head"}


def test_logit_fidelity_gate_catches_what_train_accuracy_hides(tmp_path: Path) -> None:
    """With an accuracy budget nothing could break, the logit-SQNR gate still sends the fallback to work."""
    from edgetl.quantization.accuracy_aware import infer_logits

    model, ranges, tuning = _setup(tmp_path)
    logits = infer_logits(model, tuning.batch)
    tuning = TuningSet(tuning.batch, tuning.labels, tuning.fp32_predictions, logits)
    assert tuning.logit_sqnr_db(logits) >= 100  # identical logits: no noise
    assert tuning.logit_sqnr_db(logits + np.random.default_rng(0).normal(0, 1, logits.shape)) < 40
    result = accuracy_aware_quantize(
        model, tmp_path / "int8.onnx", ranges, QuantSettings(), [], tuning, max_drop_points=100.0, min_logit_sqnr_db=20
    )
    assert result.triggered and result.attempts[0].logit_sqnr_db < 20
    assert result.within_budget and result.final.logit_sqnr_db >= 20 and "wide" in result.added_float_nodes


def test_a_float_conv_keeps_its_activation_in_float_too(tmp_path) -> None:
    from edgetl.quantization.qdq import with_fused_activations
    from tests.quantization.synthetic import build_sensitive_model

    model = onnx.load(str(build_sensitive_model(tmp_path / "model.onnx")))
    assert with_fused_activations(model, ["mix"]) == ["mix", "mix_relu"]
    assert with_fused_activations(model, ["wide"]) == ["wide"]  # its consumer is a conv, not an activation
    assert with_fused_activations(model, ["stem", "stem_relu"]) == ["stem", "stem_relu"]


def test_sensitivity_is_ranked_by_effect_on_the_logits(tmp_path) -> None:
    model, ranges, tuning = _setup(tmp_path)
    result = accuracy_aware_quantize(
        model, tmp_path / "int8.onnx", ranges, QuantSettings(), [], tuning, max_drop_points=5.0
    )
    sqnrs = [s.logit_sqnr_db for s in result.sensitivity]
    assert all(v is not None for v in sqnrs) and sqnrs == sorted(sqnrs)
    assert result.sensitivity[0].node in ("wide", "mix")  # the two sides of the outlier-channel tensor


def test_a_lone_float_conv_takes_its_producer_along_so_onnxruntime_cannot_requantize_it(tmp_path) -> None:
    """ORT's WeightBiasQuantization would give a float conv between DQ and Q per-tensor int8 weights."""
    from edgetl.quantization.qdq import sandwiched_float_nodes

    model, ranges, tuning = _setup(tmp_path)
    target = tmp_path / "int8.onnx"
    kept = quantize_with_ranges(model, target, ranges, QuantSettings(), ["wide"], {"input": tuning.batch[:1]})
    assert kept[0] == "wide" and "stem" in kept and "stem_relu" in kept  # wide read a DQ and fed mix's Q
    quantized = onnx.load(str(target))
    assert sandwiched_float_nodes(quantized, kept) == []
    assert "wide" not in quantized_compute_nodes(quantized) and "mix" in quantized_compute_nodes(quantized)
