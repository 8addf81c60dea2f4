from __future__ import annotations

import numpy as np
import pytest

from edgetl.backends.base import Runner
from edgetl.measure.latency import LatencyStats, measure_latency, measure_throughput
from edgetl.profile import BudgetsConfig
from edgetl.report.budgets import evaluate_budgets


class FakeRunner(Runner):
    """Records call order; returns fixed logits. Lets tests check the harness without timing."""

    def __init__(self, name: str, calls: list[str], fixed: int | None = None) -> None:
        super().__init__(name)
        self.calls = calls
        self._fixed = fixed

    @property
    def fixed_batch(self) -> int | None:
        return self._fixed

    def _activate(self) -> None:
        self.calls.append(f"activate {self.name}")

    def _deactivate(self) -> None:
        self.calls.append(f"deactivate {self.name}")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._fixed is not None:
            assert len(batch) == self._fixed
        self.calls.append(self.name)
        return np.stack([batch.reshape(len(batch), -1).sum(1), -batch.reshape(len(batch), -1).sum(1)], axis=1)


def test_latency_is_interleaved_in_rounds_after_warmup() -> None:
    calls: list[str] = []
    runners = [FakeRunner("a", calls), FakeRunner("b", calls)]
    stats = measure_latency(runners, np.zeros((1, 3, 2, 2), np.float32), warmup=2, iterations=6, rounds=3)
    timed = [c for c in calls if c in ("a", "b")][4:]  # after 2 warm-up runs each
    assert timed == ["a", "a", "b", "b"] * 3
    assert stats["a"].count == 6 and stats["b"].batch == 1


def test_latency_stats_percentiles() -> None:
    stats = LatencyStats.from_samples(list(range(1, 101)), batch=1)
    assert stats.p50 == pytest.approx(50.5) and stats.p90 == pytest.approx(90.1) and stats.p99 == pytest.approx(99.01)
    assert stats.min == 1 and stats.max == 100 and stats.count == 100


def test_throughput_skips_models_with_another_fixed_batch() -> None:
    calls: list[str] = []
    assert measure_throughput(FakeRunner("fixed", calls, fixed=1), np.zeros((4, 1), np.float32), 2) is None
    result = measure_throughput(FakeRunner("dyn", calls), np.zeros((4, 1), np.float32), 3)
    assert result["batch"] == 4 and result["iterations"] == 3 and result["images_per_second"] > 0


def test_fixed_batch_runners_pad_the_last_batch() -> None:
    images = np.arange(5, dtype=np.float32).reshape(5, 1)
    logits = FakeRunner("fixed", [], fixed=2).infer_any_batch(images)
    np.testing.assert_allclose(logits[:, 0], images[:, 0])


def _artifact(accuracy: float, agreement: float, p90: float, size: int, delta: float) -> dict:
    return {
        "accuracy": accuracy,
        "agreement": agreement,
        "accuracy_delta_points": delta,
        "latency_ms": {"p50": p90 / 2, "p90": p90, "p99": p90 * 2},
        "size_bytes": size,
    }


def test_budgets_report_by_how_much_they_were_missed() -> None:
    budgets = BudgetsConfig(max_accuracy_drop=1.0, min_accuracy=95, min_agreement=99, max_latency_ms=10, max_size_mb=4)
    artifacts = {"onnx_int8": _artifact(0.94, 0.98, 13.0, 5_000_000, -2.0)}
    results = {r.name: r for r in evaluate_budgets(budgets, artifacts, "onnx_int8")}
    assert not any(r.passed for r in results.values())
    assert results["max_latency_ms"].message == (
        "max_latency_ms: onnx_int8 p90 latency 13.00 ms exceeds 10 ms by 3.00 ms (30.0%)"
    )
    assert "by 1.00 points" in results["max_accuracy_drop"].message
    assert "is below 95 % by 1.00 %" in results["min_accuracy"].message
    assert "exceeds 4 MB by 1.00 MB" in results["max_size_mb"].message


def test_budgets_pass_at_the_limit_and_ignore_unset_ones() -> None:
    budgets = BudgetsConfig(max_accuracy_drop=0.0, max_latency_ms=10, latency_percentile="p50")
    results = evaluate_budgets(budgets, {"x": _artifact(0.9, 1.0, 20.0, 1, 0.0)}, "x")
    assert [r.name for r in results] == ["max_accuracy_drop", "max_latency_ms"]
    assert all(r.passed for r in results)
