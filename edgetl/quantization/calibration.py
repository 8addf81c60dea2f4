"""Activation ranges for static int8: MinMax, Percentile and a real histogram Entropy (KL) calibration.

Why not just pass `calibrate_method=Entropy` to `onnxruntime.quantization.quantize_static`? Because
it silently becomes MinMax: quantize_static does not forward the histogram settings, so the entropy
calibrator runs with 128 histogram bins and 128 quantized bins, leaving exactly one candidate
threshold (the full range). Here ranges are computed explicitly (2048 bins, KL search over every
threshold from 128 quantized bins up, TensorRT's recipe), recorded per tensor, and compared with
the plain min/max so the report can show that clipping really happened. The quantizer then gets
these ranges as `TensorQuantOverrides`, which also lets the accuracy-aware fallback re-quantize
with different float nodes without calibrating again.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ENTROPY_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128
PERCENTILE_BINS = 2048


class ImageCalibrationReader:
    """onnxruntime `CalibrationDataReader` over image files, preprocessed like the runtime does."""

    def __init__(
        self, paths: list[Path], preprocessing: Any, batch_size: int, input_name: str, fixed_batch: bool = False
    ) -> None:
        self.paths = paths
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.input_name = input_name
        self.fixed_batch = fixed_batch  # pad the last batch for models that only accept `batch_size`
        self._position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self.paths):
            return None
        chunk = self.paths[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        batch = self.preprocessing.batch(chunk)
        if self.fixed_batch and len(batch) < self.batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], self.batch_size - len(batch), axis=0)])
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._position = 0

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)


@dataclass
class TensorRange:
    low: float
    high: float
    observed_min: float
    observed_max: float

    @property
    def clipped_fraction(self) -> float:
        """Share of the observed range that calibration cut off (0 for MinMax)."""
        observed = self.observed_max - self.observed_min
        return 0.0 if observed <= 0 else 1.0 - (self.high - self.low) / observed


@dataclass
class CalibrationResult:
    method: str
    settings: dict[str, Any]
    ranges: dict[str, TensorRange] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What the calibration did, in numbers: proof that entropy/percentile did not reduce to MinMax."""
        clipped = [r.clipped_fraction for r in self.ranges.values()]
        changed = [c for c in clipped if c > 1e-6]
        return {
            "method": self.method,
            "settings": self.settings,
            "tensors": len(self.ranges),
            "tensors_clipped": len(changed),
            "median_clipped_fraction": float(np.median(changed)) if changed else 0.0,
            "max_clipped_fraction": float(max(changed)) if changed else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        return self.summary() | {"ranges": {name: vars(r) for name, r in sorted(self.ranges.items())}}

    def overrides(self) -> dict[str, list[dict[str, float]]]:
        """`TensorQuantOverrides` for quantize_static: these ranges replace its own calibration."""
        return {
            name: [{"rmin": np.float32(min(r.low, 0.0)), "rmax": np.float32(max(r.high, 0.0))}]
            for name, r in self.ranges.items()
        }


def _smooth(distribution: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """Give empty bins a little mass taken from the others, so KL divergence stays finite."""
    is_zero = distribution == 0
    zeros = int(is_zero.sum())
    nonzeros = distribution.size - zeros
    if nonzeros == 0:
        return None
    eps1 = eps * zeros / nonzeros
    if eps1 >= 1.0:
        return None
    smoothed = distribution.astype(np.float64)
    smoothed[is_zero] += eps
    smoothed[~is_zero] -= eps1
    return smoothed


def entropy_threshold(
    hist: np.ndarray, edges: np.ndarray, num_quantized_bins: int = ENTROPY_QUANTIZED_BINS
) -> tuple[float, float]:
    """The symmetric range whose `num_quantized_bins`-level quantization loses the least information.

    Same search as onnxruntime's `HistogramCollector.get_entropy_threshold` (and TensorRT's legacy
    entropy calibrator): for every candidate half-width i, clip the histogram to
    [zero - i, zero + i], fold the outliers into the end bins (p), merge into `num_quantized_bins`
    levels and expand back (q), and keep the i with the smallest KL(p || q). Vectorised per
    candidate, so 2048 bins take milliseconds per tensor instead of seconds.
    """
    hist = np.asarray(hist, dtype=np.int64)
    num_bins = hist.size
    zero = num_bins // 2
    half = num_quantized_bins // 2
    cumulative = np.concatenate([[0], np.cumsum(hist)])
    best_divergence, best = np.inf, (float(edges[0]), float(edges[-1]))
    for i in range(half, zero + 1):
        start, end = zero - i, min(zero + i + 1, num_bins)
        sliced = hist[start:end]
        p = sliced.astype(np.float64)
        p[0] += cumulative[start]
        p[-1] += cumulative[-1] - cumulative[end]
        nonzero = p != 0
        merged = sliced.size // num_quantized_bins
        body = num_quantized_bins * merged
        quantized = sliced[:body].reshape(num_quantized_bins, merged).sum(axis=1)
        quantized[-1] += sliced[body:].sum()
        norms = nonzero[:body].reshape(num_quantized_bins, merged).sum(axis=1)
        per_bin = np.divide(quantized, norms, out=np.zeros(num_quantized_bins), where=norms != 0)
        # onnxruntime stores q in an int64 array: the same truncation keeps results identical.
        q = np.zeros(p.size, dtype=np.int64)
        q[:body] = np.repeat(per_bin, merged).astype(np.int64)
        ps, qs = _smooth(p), _smooth(q)
        if ps is None or qs is None:
            divergence = np.inf
        else:
            ps, qs = ps / ps.sum(), qs / qs.sum()
            mask = ps > 0
            divergence = float(np.sum(ps[mask] * np.log(ps[mask] / qs[mask])))
        if divergence < best_divergence:
            best_divergence, best = divergence, (float(edges[start]), float(edges[end]))
    return best


def _calibrator(model: Path, work: Path, method: str, percentile: float) -> Any:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    augmented = str(work / "augmented.onnx")
    if method == "minmax":
        return create_calibrator(model, None, augmented_model_path=augmented, calibrate_method=CalibrationMethod.MinMax)
    if method == "percentile":
        return create_calibrator(
            model,
            None,
            augmented_model_path=augmented,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"num_bins": PERCENTILE_BINS, "percentile": percentile, "symmetric": False},
        )
    # Entropy: only the histogram collection is used; thresholds come from entropy_threshold().
    return create_calibrator(
        model,
        None,
        augmented_model_path=augmented,
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS},
    )


def compute_ranges(model: Path, reader: Any, method: str, percentile: float = 99.999) -> CalibrationResult:
    """Run the model on the calibration images and return one range per activation tensor."""
    settings: dict[str, Any] = {}
    if method == "percentile":
        settings = {"percentile": percentile, "histogram_bins": PERCENTILE_BINS}
    elif method == "entropy":
        settings = {"histogram_bins": ENTROPY_BINS, "quantized_bins": ENTROPY_QUANTIZED_BINS}
    result = CalibrationResult(method, settings)
    # onnxruntime's histogram calibrators print progress lines to stdout; keep the build log ours.
    with tempfile.TemporaryDirectory(prefix="edgetl-calib-") as work, contextlib.redirect_stdout(io.StringIO()):
        calibrator = _calibrator(model, Path(work), method, percentile)
        # One batch at a time: bounded memory, and histograms merge across batches of unequal size.
        while (feed := reader.get_next()) is not None:
            calibrator.collect_data(OneFeedReader(feed))
        if method == "entropy":
            for name, (hist, edges, low, high, _threshold) in calibrator.collector.histogram_dict.items():
                lo, hi = entropy_threshold(hist, edges)
                # Like onnxruntime: never widen past what was observed (one-sided tensors stay one-sided).
                result.ranges[name] = TensorRange(max(lo, float(low)), min(hi, float(high)), float(low), float(high))
            return result
        observed = _observed_extremes(calibrator)
        for name, data in calibrator.compute_data().data.items():
            low, high = float(np.min(data.range_value[0])), float(np.max(data.range_value[1]))
            seen_low, seen_high = observed.get(name, (low, high))
            result.ranges[name] = TensorRange(low, high, seen_low, seen_high)
    return result


class OneFeedReader:
    """A `CalibrationDataReader` that yields one given feed, once."""

    def __init__(self, feed: dict[str, np.ndarray]) -> None:
        self.feed: dict[str, np.ndarray] | None = feed

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed, self.feed = self.feed, None
        return feed


def _observed_extremes(calibrator: Any) -> dict[str, tuple[float, float]]:
    """True min/max per tensor from a histogram calibrator (MinMax ranges are the extremes already)."""
    collector = getattr(calibrator, "collector", None)
    if collector is None:
        return {}
    return {name: (float(h[2]), float(h[3])) for name, h in collector.histogram_dict.items()}
