"""What preprocessing inside the model costs and how closely it matches the PIL path, measured.

The pixels model (`model_pixels.onnx`) and the deployed ONNX run on the same val images: the deployed
one on the Python (PIL + numpy) preprocessing, the pixels model on the decoded pixels a naive client
hands it. Agreement and max |logit difference| between the two, each one's top-1, and the latency of
three things on one val image, interleaved in rounds: the Python preprocessing, the deployed model on
its tensor, and the pixels model on the pixels (so `added_ms` is what moving the preprocessing into
the graph costs over the model alone, next to what the Python preprocessing costs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.machine import describe_machine
from edgetl.onnx.pixels import PixelsForm, pixels_batch
from edgetl.preprocessing import Preprocessing

_ROUNDS = 5
_RUNS_PER_ROUND = 20


def _median_ms(samples: list[float]) -> float:
    return float(np.median(samples) * 1000.0)


def measure_pixels_model(
    pixels_model: Path,
    deployed: Path,
    pre: Preprocessing,
    form: PixelsForm,
    paths: list[Path],
    labels: list[int],
    threads: int,
) -> dict[str, Any]:
    """Agreement with the deployed model on `paths` and the latency the in-graph preprocessing adds."""
    from edgetl.backends.onnxruntime.runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(deployed, threads=threads) as base, OnnxRuntimeRunner(pixels_model, threads=threads) as px:
        empty = np.zeros((0, 0))
        expected = np.concatenate([base.infer_any_batch(pre.load(p)[None]) for p in paths]) if paths else empty
        got = np.concatenate([px.infer_any_batch(pixels_batch(pre, p, form)) for p in paths]) if paths else empty
        latency = _latency(base, px, pre, form, paths[0]) if paths else None
    truth = np.asarray(labels)
    agree = int((expected.argmax(axis=1) == got.argmax(axis=1)).sum()) if len(paths) else 0
    return {
        "images": len(paths),
        "agreement": agree,
        "agreement_percent": 100.0 * agree / len(paths) if paths else 100.0,
        "max_abs_logit_diff": float(np.abs(expected - got).max()) if len(paths) else 0.0,
        "correct": int((got.argmax(axis=1) == truth).sum()) if len(paths) else 0,
        "deployed_correct": int((expected.argmax(axis=1) == truth).sum()) if len(paths) else 0,
        "latency": latency,
    }


def _latency(base: Any, px: Any, pre: Preprocessing, form: PixelsForm, path: Path) -> dict[str, Any]:
    decoded = pre.decode(path)
    tensor = pre(decoded)[None]
    pixels = pixels_batch(pre, path, form)
    timed: dict[str, tuple[Callable[[], Any], list[float]]] = {
        "python_preprocessing_ms": (lambda: pre(decoded), []),
        "model_ms": (lambda: base.infer_any_batch(tensor), []),
        "pixels_model_ms": (lambda: px.infer_any_batch(pixels), []),
    }
    for call, _ in timed.values():  # warm-up
        call()
    for _ in range(_ROUNDS):
        for call, samples in timed.values():
            for _ in range(_RUNS_PER_ROUND):
                start = time.perf_counter()
                call()
                samples.append(time.perf_counter() - start)
    result: dict[str, Any] = {name: round(_median_ms(samples), 3) for name, (_, samples) in timed.items()}
    result["added_ms"] = round(result["pixels_model_ms"] - result["model_ms"], 3)
    result["image_size"] = list(decoded.size)
    result["pixels_shape"] = list(pixels.shape)
    result["threads"] = base.threads
    result["cpu"] = describe_machine()["cpu"]
    result["method"] = f"median of {_ROUNDS} interleaved rounds x {_RUNS_PER_ROUND} runs, batch 1"
    return result
