"""Statistics that make accuracy claims meaningful on small validation sets.

With ~150 validation images one image is ~0.7 percentage points, so "the INT8 model lost 1.3 points" can be two
images of noise. These helpers put an interval on an accuracy, an interval on the paired difference between two
models evaluated on the same images, and an exact test of whether they differ at all.

numpy and the standard library only: this module is importable from the runtime install (no scipy). Every function
is pure and deterministic for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

ArrayLike = Sequence[Any] | np.ndarray

# Two-sided significance level used for McNemar's human-readable interpretation.
_SIGNIFICANCE = 0.05
# Up to this many discordant pairs the McNemar tail is summed with exact integers; beyond it, in log space
# (exact big-integer sums grow quadratically in cost, and 2**n no longer fits a float anyway).
_EXACT_MCNEMAR_MAX_N = 2000


# ---------------------------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------------------------


def _as_vector(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one entry per image), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: need at least one image")
    return array


def _as_correct(values: ArrayLike, name: str) -> np.ndarray:
    """A per-image right/wrong vector as bool; accepts bools or 0/1 numbers."""
    array = _as_vector(values, name)
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind in "iuf" and np.isin(array, (0, 1)).all():
        return array.astype(bool)
    raise ValueError(f"{name} must hold booleans (or 0/1), one per image; got dtype {array.dtype}")


def _as_labels(values: ArrayLike, name: str) -> np.ndarray:
    """Class indices as int64; rejects floats and negatives so a label mix-up fails loudly."""
    array = _as_vector(values, name)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class indices; got dtype {array.dtype}")
    array = array.astype(np.int64)
    if (array < 0).any():
        raise ValueError(f"{name} holds negative class indices")
    return array


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        described = ", ".join(f"{name} has {length}" for name, length in lengths.items())
        raise ValueError(f"inputs must have one entry per image and equal lengths: {described}")
    return next(iter(lengths.values()))


def _check_bootstrap_args(confidence: float, resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------------------------
# Bootstrap intervals
# ---------------------------------------------------------------------------------------------------------------


def bootstrap_accuracy_ci(
    correct: ArrayLike, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Percentile-bootstrap confidence interval for an accuracy.

    Why: a point accuracy on ~150 images hides several points of sampling noise; the interval shows it.

    Resampling n images with replacement and counting the correct ones is exactly a Binomial(n, accuracy) draw, so
    the resamples are drawn that way: the same distribution as drawing indices, in O(resamples) time and memory
    whatever the number of images. If every image is right (or wrong) the interval collapses to that point.
    """
    _check_bootstrap_args(confidence, resamples)
    right = _as_correct(correct, "correct")
    n = len(right)
    hits = int(right.sum())
    accuracy = hits / n
    rng = np.random.default_rng(seed)
    samples = rng.binomial(n, accuracy, size=int(resamples)) / n
    low, high = _percentile_interval(samples, confidence)
    return {
        "accuracy": accuracy,
        "low": low,
        "high": high,
        "confidence": confidence,
        "resamples": int(resamples),
        "method": "percentile bootstrap",
    }


def wilson_interval(correct: float, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of an accuracy of `correct` out of `total` (z = 1.96: two-sided 95 %).

    Why not the bootstrap: at 72 of 72 the bootstrap collapses to [100 %, 100 %], while what 72 images
    actually say is "at least about 95 %". Wilson keeps its width at the edges.
    """
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    centre = p + z * z / (2 * total)
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    denominator = 1 + z * z / total
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)


def paired_bootstrap_difference(
    correct_a: ArrayLike, correct_b: ArrayLike, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Percentile-bootstrap interval for accuracy(b) - accuracy(a), in percentage points, resampling images jointly.

    Why paired: both models see the same images, so most of the per-image difficulty cancels; resampling the two
    vectors independently would give a much wider (wrong) interval.

    A joint resample only changes the difference through how many "a only right" and "b only right" images it
    picks, which is a multinomial draw over the four agreement cells; it is drawn that way (same distribution as
    resampling indices, O(resamples) cost). Identical vectors give exactly 0 with zero width.
    """
    _check_bootstrap_args(confidence, resamples)
    a = _as_correct(correct_a, "correct_a")
    b = _as_correct(correct_b, "correct_b")
    n = _same_length(correct_a=a, correct_b=b)
    a_only = int((a & ~b).sum())
    b_only = int((~a & b).sum())
    rest = n - a_only - b_only
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [a_only / n, b_only / n, rest / n], size=int(resamples))
    samples = (counts[:, 1] - counts[:, 0]) * (100.0 / n)
    low, high = _percentile_interval(samples, confidence)
    return {
        "difference_points": (b_only - a_only) * 100.0 / n,
        "low_points": low,
        "high_points": high,
        "confidence": confidence,
        "resamples": int(resamples),
    }


# ---------------------------------------------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------------------------------------------


def _binomial_lower_tail_exact(n: int, m: int) -> float:
    """P(X <= m) for X ~ Binomial(n, 1/2), with exact integers (correctly rounded on the final division)."""
    total = 0
    term = 1  # C(n, 0)
    for k in range(m + 1):
        total += term
        term = term * (n - k) // (k + 1)
    return total / (1 << n)


def _binomial_lower_tail_log(n: int, m: int) -> float:
    """P(X <= m) for X ~ Binomial(n, 1/2), summed in log space so it never overflows."""
    log_n_factorial = math.lgamma(n + 1)
    k = np.arange(m + 1, dtype=np.float64)
    lgamma = np.vectorize(math.lgamma, otypes=[np.float64])
    log_terms = log_n_factorial - lgamma(k + 1.0) - lgamma(n - k + 1.0) - n * math.log(2.0)
    peak = float(log_terms.max())
    return math.exp(peak + math.log(float(np.exp(log_terms - peak).sum())))


def _format_p(p: float) -> str:
    if p < 0.001:
        return "p<0.001"
    if p < 0.1:
        return f"p={p:.3f}"
    return f"p={p:.2f}"


def mcnemar_exact(correct_a: ArrayLike, correct_b: ArrayLike) -> dict[str, Any]:
    """Exact two-sided McNemar test: do a and b differ in accuracy on the same images?

    Why exact: with a handful of discordant images the chi-squared approximation is poor. Only discordant images
    carry information: b = a right & b wrong, c = a wrong & b right, n = b + c; under "no difference" each discordant
    image is a fair coin, so p = min(1, 2 * P(Binomial(n, 1/2) <= min(b, c))), and p = 1 when n = 0.

    A high p-value is absence of evidence, not proof of equivalence: on a small set a real drop of a point or two
    is easily "not significant". That is why the paired bootstrap interval of the difference is reported with it.
    """
    a = _as_correct(correct_a, "correct_a")
    b = _as_correct(correct_b, "correct_b")
    _same_length(correct_a=a, correct_b=b)
    a_only = int((a & ~b).sum())
    b_only = int((~a & b).sum())
    n = a_only + b_only
    if n == 0:
        p_value = 1.0
    else:
        m = min(a_only, b_only)
        tail = _binomial_lower_tail_exact(n, m) if n <= _EXACT_MCNEMAR_MAX_N else _binomial_lower_tail_log(n, m)
        p_value = min(1.0, 2.0 * tail)
    counts = f"{a_only} vs {b_only} discordant images (a only right vs b only right)"
    if n == 0:
        interpretation = "no discordant images: a and b are right on exactly the same images (p=1.00)"
    elif p_value < _SIGNIFICANCE:
        interpretation = f"significant difference at 5% ({_format_p(p_value)}); {counts}"
    else:
        interpretation = f"no evidence of a difference ({_format_p(p_value)}); {counts}"
    return {
        "a_only_correct": a_only,
        "b_only_correct": b_only,
        "discordant": n,
        "p_value": p_value,
        "test": "exact McNemar (binomial, two-sided)",
        "interpretation": interpretation,
    }


# ---------------------------------------------------------------------------------------------------------------
# Per-class views
# ---------------------------------------------------------------------------------------------------------------


def confusion_matrix(labels: ArrayLike, predictions: ArrayLike, num_classes: int) -> list[list[int]]:
    """Counts with rows = true class and columns = predicted class; shows which classes are confused, not just how
    often."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    truth = _as_labels(labels, "labels")
    predicted = _as_labels(predictions, "predictions")
    _same_length(labels=truth, predictions=predicted)
    for name, array in (("labels", truth), ("predictions", predicted)):
        if (array >= num_classes).any():
            raise ValueError(f"{name} holds class index {int(array.max())}, but num_classes is {num_classes}")
    k = int(num_classes)
    counts = np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k)
    return [[int(value) for value in row] for row in counts]


def per_class_accuracy(labels: ArrayLike, predictions: ArrayLike, classes: list[str]) -> dict[str, dict[str, Any]]:
    """Accuracy (recall), precision and F1 per class; an overall accuracy can hide one class that collapsed.

    Ratios with a zero denominator are None (not 0), so "no images of this class" is not read as "all wrong".
    """
    if not classes:
        raise ValueError("classes is empty: need at least one class name")
    matrix = np.asarray(confusion_matrix(labels, predictions, len(classes)), dtype=np.int64)
    result: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(classes):
        correct = int(matrix[index, index])
        total = int(matrix[index, :].sum())
        predicted = int(matrix[:, index].sum())
        recall = correct / total if total else None
        precision = correct / predicted if predicted else None
        if recall is None or precision is None:
            f1 = None
        elif precision + recall == 0:
            f1 = 0.0
        else:
            f1 = 2 * precision * recall / (precision + recall)
        result[name] = {
            "correct": correct,
            "total": total,
            "accuracy": recall,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    return result


def agreement(predictions_a: ArrayLike, predictions_b: ArrayLike) -> dict[str, Any]:
    """How often two models predict the same class, and on which images they differ.

    Why: equal accuracy can hide different mistakes; the differing indices are the images worth looking at.
    """
    a = _as_vector(predictions_a, "predictions_a")
    b = _as_vector(predictions_b, "predictions_b")
    n = _same_length(predictions_a=a, predictions_b=b)
    differ = np.flatnonzero(a != b)
    return {
        "agreement": 1.0 - len(differ) / n,
        "disagreements": int(len(differ)),
        "indices": [int(index) for index in differ],
    }


# ---------------------------------------------------------------------------------------------------------------
# Bundle
# ---------------------------------------------------------------------------------------------------------------


def compare_to_baseline(
    labels: ArrayLike,
    baseline_predictions: ArrayLike,
    predictions: ArrayLike,
    seed: int = 0,
    confidence: float = 0.95,
    resamples: int = 10_000,
) -> dict[str, Any]:
    """Everything needed to judge an artefact (e.g. the INT8 model) against its baseline on the same images.

    "a" is the baseline and "b" the artefact throughout, so a positive difference means the artefact is better.
    """
    truth = _as_labels(labels, "labels")
    baseline = _as_labels(baseline_predictions, "baseline_predictions")
    artefact = _as_labels(predictions, "predictions")
    n = _same_length(labels=truth, baseline_predictions=baseline, predictions=artefact)
    baseline_correct = baseline == truth
    artefact_correct = artefact == truth
    return {
        "images": n,
        "accuracy": bootstrap_accuracy_ci(artefact_correct, confidence, resamples, seed),
        "baseline_accuracy": bootstrap_accuracy_ci(baseline_correct, confidence, resamples, seed),
        "difference": paired_bootstrap_difference(baseline_correct, artefact_correct, confidence, resamples, seed),
        "mcnemar": mcnemar_exact(baseline_correct, artefact_correct),
        "agreement": agreement(baseline, artefact),
    }
