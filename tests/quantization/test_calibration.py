"""Calibration: entropy really clips (it is not MinMax in disguise) and matches onnxruntime's search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetl.quantization.calibration import compute_ranges, entropy_threshold
from edgetl.quantization.qdq import prepare
from tests.quantization.synthetic import build_sensitive_model, images


class ArrayReader:
    def __init__(self, batch: np.ndarray, size: int) -> None:
        self.feeds = [{"input": batch[i : i + size]} for i in range(0, len(batch), size)]

    def get_next(self) -> dict[str, np.ndarray] | None:
        return self.feeds.pop(0) if self.feeds else None


def _heavy_tailed_histogram(seed: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    values = np.random.default_rng(seed).standard_t(3, size=100_000).astype(np.float32)
    threshold = np.float32(np.abs(values).max())
    hist, edges = np.histogram(values, 2048, range=(-threshold, threshold))
    return hist, edges.astype(np.float32), float(values.min()), float(values.max())


@pytest.mark.parametrize("seed", [0, 1])
def test_entropy_threshold_matches_onnxruntime_reference(seed: int) -> None:
    from onnxruntime.quantization.calibrate import HistogramCollector

    hist, edges, low, high = _heavy_tailed_histogram(seed)
    reference = HistogramCollector("entropy", False, 2048, 128, None, None).get_entropy_threshold(
        (hist, edges, np.float32(low), np.float32(high), np.float32(max(-low, high))), 128
    )
    mine = entropy_threshold(hist, edges, 128)
    assert mine == pytest.approx((float(reference[0]), float(reference[1])), rel=1e-6)
    assert mine[1] < 0.8 * high  # heavy tails: the KL optimum clips part of the observed range


def test_onnxruntime_default_entropy_settings_reduce_to_minmax() -> None:
    """Why edgetl computes entropy itself: with 128 bins / 128 levels there is one candidate, the full range."""
    hist, edges, low, high = _heavy_tailed_histogram(0)
    hist128, edges128 = np.histogram(np.repeat((edges[:-1] + edges[1:]) / 2, hist), 128, range=(edges[0], edges[-1]))
    assert entropy_threshold(hist128, edges128.astype(np.float32), 128) == pytest.approx(
        (float(edges128[0]), float(edges128[-1]))
    )


def test_compute_ranges_minmax_percentile_entropy(tmp_path: Path) -> None:
    model = prepare_model(tmp_path)
    batch = images(48)
    ranges = {m: compute_ranges(model, ArrayReader(batch, 16), m) for m in ("minmax", "percentile", "entropy")}
    minmax = ranges["minmax"]
    assert minmax.summary()["tensors_clipped"] == 0 and minmax.summary()["tensors"] >= 4
    for method in ("percentile", "entropy"):
        summary = ranges[method].summary()
        assert summary["tensors"] == minmax.summary()["tensors"]
        assert summary["tensors_clipped"] > 0, method  # really clipped something: not MinMax in disguise
        for name, r in ranges[method].ranges.items():
            assert minmax.ranges[name].low - 1e-4 <= r.low <= r.high <= minmax.ranges[name].high + 1e-4
            assert r.observed_min == pytest.approx(minmax.ranges[name].low, rel=1e-4, abs=1e-5)
    overrides = ranges["entropy"].overrides()
    assert set(overrides) == set(ranges["entropy"].ranges)
    assert all(o[0]["rmin"] <= 0 <= o[0]["rmax"] for o in overrides.values())


def prepare_model(tmp_path: Path) -> Path:
    prepared = tmp_path / "prepared.onnx"
    assert prepare(build_sensitive_model(tmp_path / "model.onnx"), prepared) == []
    return prepared
