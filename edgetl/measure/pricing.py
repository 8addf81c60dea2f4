"""What a fallback model costs: its size against fp32 exactly, its latency against fp32 and all-int8 measured.

The accuracy-aware int8 fallback keeps sensitive nodes in float until the accuracy budget is met;
this prices each candidate so that a fallback which gives away what int8 is for is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

COST_ITERATIONS = 40


class FallbackPricer:
    """Prices fallback models against fp32 and all-int8: size exactly, latency measured interleaved in one run.

    `keep_speedup`: share of the all-int8 model's speed-up over fp32 a fallback must keep (None: no
    speed limit, e.g. TensorRT targets, whose speed this CPU cannot tell). `max_size_ratio`: largest
    file size as a share of fp32's (None: no limit).
    """

    def __init__(
        self,
        fp32: Path,
        all_int8: Path,
        sample: np.ndarray,
        threads: int,
        keep_speedup: float | None,
        max_size_ratio: float | None,
    ) -> None:
        self.fp32, self.all_int8 = fp32, all_int8
        self.sample, self.threads = sample, threads
        self.keep_speedup, self.max_size_ratio = keep_speedup, max_size_ratio

    def describe_limit(self) -> str:
        parts = []
        if self.keep_speedup is not None:
            parts.append(f">= {self.keep_speedup:g}x all-int8's speed-up over fp32")
        if self.max_size_ratio is not None:
            parts.append(f"<= {self.max_size_ratio:g}x the fp32 size")
        return ", ".join(parts) or "none"

    def latencies(self, candidate: Path) -> dict[str, float]:
        """p50 ms of fp32, all-int8 and `candidate`, interleaved in one run."""
        from edgetl.backends.onnxruntime.runner import OnnxRuntimeRunner
        from edgetl.measure.latency import measure_latency

        runners = [
            OnnxRuntimeRunner(self.fp32, name="fp32", threads=self.threads),
            OnnxRuntimeRunner(self.all_int8, name="all_int8", threads=self.threads),
            OnnxRuntimeRunner(candidate, name="candidate", threads=self.threads),
        ]
        try:
            stats = measure_latency(runners, self.sample, warmup=5, iterations=COST_ITERATIONS, rounds=4)
        finally:
            for runner in runners:
                runner.deactivate()
        return {name: value.p50 for name, value in stats.items()}

    def __call__(self, candidate: Path, measure_speed: bool) -> Any:
        from edgetl.quantization.accuracy_aware import Price

        size_ratio = candidate.stat().st_size / self.fp32.stat().st_size
        if self.max_size_ratio is not None and size_ratio > self.max_size_ratio + 1e-9:
            return Price(size_ratio, within=False, reason=f"{size_ratio:.2f}x the fp32 size > {self.max_size_ratio:g}x")
        if not measure_speed or self.keep_speedup is None:
            return Price(size_ratio)
        p50 = self.latencies(candidate)
        speedup, int8_speedup = p50["fp32"] / p50["candidate"], p50["fp32"] / p50["all_int8"]
        # A share of all-int8's speed-up (0.8 x 2.0x = 1.6x), and never slower than fp32 itself.
        floor = max(1.0, self.keep_speedup * int8_speedup)
        within = speedup >= floor - 1e-9
        reason = "" if within else f"{speedup:.2f}x fp32 speed < {floor:.2f}x (all-int8: {int8_speedup:.2f}x)"
        return Price(size_ratio, speedup, int8_speedup, within, reason)

    def cost(self, final: Path) -> dict[str, Any]:
        """The shipped fallback against all-int8 and fp32, for quantization.json and the report."""
        p50 = self.latencies(final)
        return {
            "all_int8_p50_ms": p50["all_int8"],
            "fallback_p50_ms": p50["candidate"],
            "fp32_p50_ms": p50["fp32"],
            "slowdown": p50["candidate"] / p50["all_int8"],
            "speedup_vs_fp32": p50["fp32"] / p50["candidate"],
            "all_int8_speedup_vs_fp32": p50["fp32"] / p50["all_int8"],
            "size_ratio": final.stat().st_size / self.fp32.stat().st_size,
            "threads": self.threads,
            "method": f"p50 of {COST_ITERATIONS} batch-1 runs each, interleaved, in the optimize stage",
        }
