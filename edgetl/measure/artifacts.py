"""Measure every artefact the same way, on images the model never saw: the harness behind every number.

All artefacts get identical inputs: images preprocessed by the runtime's own preprocessing. Per
artefact: predictions (for accuracy and the statistics in the report), batch-1 latency interleaved
across artefacts, a batch-size sweep, peak memory of a fresh process, MACs and parameters counted
on the shipped file, and the share of this machine's measured GEMM peak. The build's benchmark
stage, `edgetl bench RUN` and `edgetl bench BUNDLE` all call `measure_models`; each runner comes
from its backend in the catalogue, and what a runner can do is asked of the runner.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.backends import artifact, backend_for
from edgetl.backends.base import Runner
from edgetl.errors import DataError
from edgetl.machine import describe_machine, package_versions
from edgetl.profile import BenchmarkConfig

RESULTS_SCHEMA = "edgetl.benchmark/2"
# Which GEMM peak an artefact's utilization is measured against.
_PEAK_PRECISION = {"fp32": "fp32", "fp16": "fp32", "int8": "int8"}


def make_runners(models: dict[str, Path], threads: int) -> list[Runner]:
    """One runner per artefact, from its backend; a runtime is imported only when its runner activates."""
    return [backend_for(name).make_runner(path, name, threads) for name, path in models.items()]


def _compute(models: dict[str, Path], log: Callable[[str], None], cfg: BenchmarkConfig) -> dict[str, Any]:
    """MACs/parameters of each ONNX file, plus the GEMM peaks that utilization is measured against.

    An artefact converted from an ONNX model (an OpenVINO IR) or trained into one (the checkpoint)
    carries the counts of that ONNX graph, and says so.
    """
    from edgetl.measure.compute import count_onnx_macs, measure_gemm_peak

    counts: dict[str, Any] = {}
    for name, path in models.items():
        if artifact(name).format == "onnx":
            counts[name] = count_onnx_macs(path, batch=1)
    for name in models:
        source = artifact(name).source or ("onnx_fp32" if name == "torch_fp32" else None)
        if name not in counts and source in counts and artifact(name).format != "tensorrt":
            counts[name] = counts[source] | {"note": f"counted on the ONNX graph of {source}"}
    peaks: dict[str, Any] = {}
    if cfg.compute_peak:
        log(f"GEMM peak of ONNX Runtime at {cfg.threads} thread(s), fp32 and int8")
        peaks = {precision: measure_gemm_peak(cfg.threads, precision) for precision in ("fp32", "int8")}
    return {"counts": counts, "peaks": peaks}


def measure_models(
    models: dict[str, Path],
    images: list[Path],
    labels: list[int],
    classes: list[str],
    preprocessing: Any,
    cfg: BenchmarkConfig,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Accuracy, latency, sweep, memory and compute of every model; the benchmark results dict."""
    from edgetl.measure.latency import measure_latency, measure_throughput

    if not images:
        raise DataError("val split is empty: nothing to evaluate on", hint="add images to val/ or raise val_fraction")
    runners = make_runners(models, cfg.threads)
    log(f"accuracy of {', '.join(r.name for r in runners)} on {len(images)} val images")
    logits: dict[str, list[np.ndarray]] = {r.name: [] for r in runners}
    for runner in runners:
        runner.activate()
    first_batch: np.ndarray | None = None
    for start in range(0, len(images), cfg.eval_batch_size):
        batch = preprocessing.batch(images[start : start + cfg.eval_batch_size])
        if first_batch is None:
            first_batch = batch
        for runner in runners:
            logits[runner.name].append(runner.infer_any_batch(batch))
    assert first_batch is not None

    log(
        f"latency at batch 1, {cfg.threads} thread(s): {cfg.warmup} warm-up + {cfg.iterations} runs each, "
        f"interleaved in {cfg.rounds} rounds; batch sweep {cfg.batch_sizes}"
    )
    latency = measure_latency(runners, first_batch[:1], cfg.warmup, cfg.iterations, cfg.rounds)
    compute = _compute(models, log, cfg)
    artifacts: dict[str, Any] = {}
    for runner in runners:
        predictions = np.concatenate(logits[runner.name]).argmax(axis=1)
        correct = int((predictions == np.asarray(labels)).sum())
        path = models[runner.name]
        identity = artifact(runner.name)
        shape = first_batch.shape[1:]
        sweep = [
            measure_throughput(runner, np.resize(first_batch, (size, *shape)), cfg.throughput_iterations)
            for size in cfg.batch_sizes
        ]
        throughput_batch = np.resize(first_batch, (cfg.throughput_batch_size, *first_batch.shape[1:]))
        entry: dict[str, Any] = {
            "file": identity.file,
            "format": identity.format,
            "precision": identity.precision,
            "runtime": backend_for(runner.name).label,
            "backend": identity.backend,
            "execution": runner.describe(),
            "size_bytes": _size(path, identity.companions),
            "correct": correct,
            "total": len(labels),
            "accuracy": correct / len(labels),
            "predictions": predictions.tolist(),
            "latency_ms": vars(latency[runner.name]),
            "throughput": measure_throughput(runner, throughput_batch, cfg.throughput_iterations),
            "batch_sweep": [item for item in sweep if item is not None],
        }
        runner.deactivate()
        entry["compute"] = _utilization(compute, runner.name, identity.precision, entry["latency_ms"])
        artifacts[runner.name] = entry
    if cfg.memory:
        from edgetl.measure.memory import measure_peak_memory

        log("peak memory of each artefact in a fresh process")
        for name, path in models.items():
            backend = backend_for(name)
            if not backend.host_memory:
                artifacts[name]["memory"] = {"note": f"not measured: {backend.notes or 'not a host-memory runtime'}"}
                continue
            try:
                artifacts[name]["memory"] = measure_peak_memory(
                    path, 1, cfg.threads, backend.name, input_shape=list(first_batch.shape[1:])
                )
            except RuntimeError as error:
                artifacts[name]["memory"] = {"error": str(error).splitlines()[0]}
    return {
        "schema": RESULTS_SCHEMA,
        "machine": describe_machine(),
        "versions": package_versions("torch", "onnxruntime", "openvino", "numpy"),
        "settings": cfg.model_dump(mode="json"),
        "eval": {"split": "val", "images": len(images), "classes": classes, "labels": list(labels)},
        "peaks": compute["peaks"],
        "artifacts": artifacts,
    }


def _size(path: Path, companions: tuple[str, ...]) -> int:
    """Bytes on disk of the artefact: its file plus the files it cannot run without (an IR's weights)."""
    size = path.stat().st_size
    for companion in companions:
        sibling = path.with_suffix(Path(companion).suffix)  # model_int8.xml -> model_int8.bin; in a bundle model.bin
        if sibling.is_file():
            size += sibling.stat().st_size
    return size


def _utilization(compute: dict[str, Any], name: str, precision: str, latency: dict[str, Any]) -> dict[str, Any] | None:
    from edgetl.measure.compute import compute_utilization

    counts = compute["counts"].get(name)
    if counts is None:
        return None
    entry = {k: counts[k] for k in ("macs", "parameters", "weight_bytes") if k in counts}
    if "note" in counts:
        entry["note"] = counts["note"]
    peak = compute["peaks"].get(_PEAK_PRECISION[precision])
    if peak and latency["batch"] == 1 and counts.get("macs"):
        entry["utilization"] = compute_utilization(counts["macs"], latency["p50"], peak)
        entry["utilization"]["peak_precision"] = _PEAK_PRECISION[precision]
    return entry
