"""Measurement: accuracy on real images and latency/throughput with warm-up and fixed threads.

Latency is measured in interleaved rounds (A, B, C, A, B, C, ...) so that a noisy neighbour or a
frequency change hits every artefact alike; ratios between artefacts measured in one run are what
the report compares. Every number here is measured; nothing is estimated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgetl.backends.base import Runner

# Nanosecond clock used for every timing (a module attribute so tests can inject a fake one).
clock = time.perf_counter_ns


@dataclass
class LatencyStats:
    batch: int
    count: int
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    samples: list[float]  # every measured run, in order, for distributions and re-analysis

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], batch: int) -> LatencyStats:
        values = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            batch=batch,
            count=int(values.size),
            p50=float(np.percentile(values, 50)),
            p90=float(np.percentile(values, 90)),
            p99=float(np.percentile(values, 99)),
            mean=float(values.mean()),
            std=float(values.std()),
            min=float(values.min()),
            max=float(values.max()),
            samples=[round(float(v), 4) for v in values],
        )


def measure_latency(
    runners: Sequence[Runner], sample: np.ndarray, warmup: int, iterations: int, rounds: int
) -> dict[str, LatencyStats]:
    """Latency at batch `len(sample)` (or a model's fixed batch) of each runner, interleaved in rounds."""
    inputs: dict[str, np.ndarray] = {}
    for runner in runners:
        runner.activate()
        batch = runner.fixed_batch or len(sample)
        inputs[runner.name] = sample if batch == len(sample) else np.resize(sample, (batch, *sample.shape[1:]))
        for _ in range(warmup):
            runner.infer(inputs[runner.name])
    per_round = max(1, math.ceil(iterations / rounds))
    samples: dict[str, list[float]] = {r.name: [] for r in runners}
    for _ in range(rounds):
        for runner in runners:
            timings, data = samples[runner.name], inputs[runner.name]
            for _ in range(per_round):
                timings.append(_timed_ms(runner, data))
    return {name: LatencyStats.from_samples(values, len(inputs[name])) for name, values in samples.items()}


def _timed_ms(runner: Runner, data: np.ndarray) -> float:
    """One inference in ms: the runner's own device timer (CUDA events for TensorRT) or the host clock."""
    if runner.has_device_timer:
        return float(runner.timed_infer(data))
    started = clock()
    runner.infer(data)
    return (clock() - started) / 1e6


def measure_throughput(runner: Runner, batch: np.ndarray, iterations: int) -> dict[str, Any] | None:
    """Images per second at `len(batch)`; None if the model cannot take that batch size."""
    fixed = runner.fixed_batch
    if fixed is not None and fixed != len(batch):
        return None
    largest = runner.max_batch
    if largest is not None and len(batch) > largest:
        return None
    runner.activate()
    runner.infer(batch)  # warm-up: allocations for the larger shape
    timings = []
    for _ in range(iterations):
        started = clock()
        runner.infer(batch)
        timings.append((clock() - started) / 1e9)
    median = float(np.median(timings))
    return {
        "batch": int(len(batch)),
        "iterations": iterations,
        "images_per_second": len(batch) / median,
        "batch_ms_p50": median * 1e3,
    }
