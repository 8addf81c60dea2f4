"""Budgets: limits in the profile that fail a build, each reported with by how much it was missed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgetl.profile import BudgetsConfig

# Accuracy comparisons are on counts of images, so allow for float rounding only.
_EPSILON = 1e-9


@dataclass(frozen=True)
class BudgetResult:
    name: str
    artifact: str
    limit: float
    measured: float
    unit: str
    passed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(name: str, artifact: str, limit: float, measured: float, unit: str, upper: bool, what: str) -> BudgetResult:
    passed = measured <= limit + _EPSILON if upper else measured >= limit - _EPSILON
    if passed:
        message = f"{name}: {artifact} {what} {measured:.2f} {unit} ({'<=' if upper else '>='} {limit:g} {unit})"
    else:
        excess = measured - limit if upper else limit - measured
        relative = f" ({excess / limit:.1%})" if limit else ""
        verb = "exceeds" if upper else "is below"
        message = (
            f"{name}: {artifact} {what} {measured:.2f} {unit} {verb} {limit:g} {unit} by {excess:.2f} {unit}{relative}"
        )
    return BudgetResult(name, artifact, limit, measured, unit, passed, message)


def budget_view(measured: dict[str, dict[str, Any]], name: str, baseline: str) -> dict[str, Any]:
    """What budgets read of one artefact, from raw measurements: the report adds its statistics around it."""
    item, base = measured[name], measured[baseline]
    predictions, base_predictions = np.asarray(item["predictions"]), np.asarray(base["predictions"])
    return {
        "accuracy": item["accuracy"],
        "latency_ms": item["latency_ms"],
        "size_bytes": item["size_bytes"],
        "agreement": float((predictions == base_predictions).mean()) if len(predictions) else 0.0,
        "disagreements": int((predictions != base_predictions).sum()),
        "accuracy_delta_points": (item["accuracy"] - base["accuracy"]) * 100,
        "speedup_vs": {other: measured[other]["latency_ms"]["p50"] / item["latency_ms"]["p50"] for other in measured},
        "size_ratio_vs": {other: item["size_bytes"] / measured[other]["size_bytes"] for other in measured},
    }


def evaluate_budgets(budgets: BudgetsConfig, artifacts: dict[str, dict[str, Any]], artifact: str) -> list[BudgetResult]:
    """Check every budget set in the profile against the measured `artifact` entry of the report."""
    measured = artifacts[artifact]
    results: list[BudgetResult] = []
    if budgets.max_accuracy_drop is not None:
        results.append(
            _check(
                "max_accuracy_drop",
                artifact,
                budgets.max_accuracy_drop,
                -measured["accuracy_delta_points"],
                "points",
                True,
                "accuracy drop vs baseline",
            )
        )
    if budgets.min_accuracy is not None:
        results.append(
            _check(
                "min_accuracy", artifact, budgets.min_accuracy, measured["accuracy"] * 100, "%", False, "top-1 accuracy"
            )
        )
    if budgets.min_agreement is not None:
        results.append(
            _check(
                "min_agreement",
                artifact,
                budgets.min_agreement,
                measured["agreement"] * 100,
                "%",
                False,
                "top-1 agreement with baseline",
            )
        )
    if budgets.max_latency_ms is not None:
        percentile = budgets.latency_percentile
        results.append(
            _check(
                "max_latency_ms",
                artifact,
                budgets.max_latency_ms,
                measured["latency_ms"][percentile],
                "ms",
                True,
                f"{percentile} latency",
            )
        )
    if budgets.max_size_mb is not None:
        results.append(
            _check("max_size_mb", artifact, budgets.max_size_mb, measured["size_bytes"] / 1e6, "MB", True, "file size")
        )
    reference = "onnx_fp32"
    if budgets.min_speedup is not None:
        results.append(_relative(artifact, measured, reference, "min_speedup", budgets.min_speedup))
    if budgets.max_size_ratio is not None:
        results.append(_relative(artifact, measured, reference, "max_size_ratio", budgets.max_size_ratio))
    return results


def _relative(artifact: str, measured: dict[str, Any], reference: str, name: str, limit: float) -> BudgetResult:
    """A budget relative to the fp32 ONNX model; failed (not skipped) when that model was not measured."""
    table = measured["speedup_vs" if name == "min_speedup" else "size_ratio_vs"]
    if reference not in table:
        return BudgetResult(
            name, artifact, limit, float("nan"), "x", False, f"{name}: {reference} was not benchmarked to compare with"
        )
    if name == "min_speedup":
        return _check(name, artifact, limit, table[reference], "x", False, f"p50 speed-up over {reference}")
    return _check(name, artifact, limit, table[reference], "x", True, f"file size relative to {reference}")
