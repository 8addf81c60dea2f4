"""Benchmark stage: measure every artefact the same way, on val images the model never saw.

All artefacts get identical inputs: val images preprocessed by the runtime's own preprocessing.
Per artefact: predictions (for accuracy and the statistics in the report), batch-1 latency
interleaved across artefacts, a batch-size sweep, peak memory of a fresh process, MACs and
parameters counted on the shipped file, and the share of this machine's measured GEMM peak.
`measure_models` is also what `edgetl bench` runs on an existing run directory.
Output: `benchmark/results.json` (raw measurements, per-image predictions and latency samples).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import DataError
from edgetl.files import write_json_atomic
from edgetl.machine import describe_machine, machine_signature
from edgetl.profile import BenchmarkConfig, profile_section
from edgetl.runtime.predictor import MODEL_FILES
from edgetl.runtime.runners import OnnxRuntimeRunner, Runner
from edgetl.stages.base import BuildContext, Stage, package_versions
from edgetl.stages.data import SPLIT_FILE, read_split, split_paths
from edgetl.stages.finetune import CHECKPOINT_FILE, PREPROCESSING_FILE

RESULTS_FILE = "benchmark/results.json"
RESULTS_SCHEMA = "edgetl.benchmark/2"

ENGINE_FILE = "bundle/model.engine"
ARTIFACT_FILES = {"torch_fp32": CHECKPOINT_FILE, **MODEL_FILES, "trt_fp16": ENGINE_FILE, "trt_int8": ENGINE_FILE}
ARTIFACT_STAGE = {
    "torch_fp32": "finetune",
    "onnx_fp32": "export",
    "onnx_fp16": "optimize",
    "onnx_int8": "optimize",
    "trt_fp16": "package",
    "trt_int8": "package",
}
ARTIFACT_DESCRIPTION = {
    "torch_fp32": ("pytorch", "fp32", "PyTorch eager"),
    "onnx_fp32": ("onnx", "fp32", "ONNX Runtime CPU"),
    "onnx_fp16": ("onnx", "fp16", "ONNX Runtime CPU"),
    "onnx_int8": ("onnx", "int8", "ONNX Runtime CPU"),
    "trt_fp16": ("tensorrt", "fp16", "TensorRT GPU"),
    "trt_int8": ("tensorrt", "int8", "TensorRT GPU"),
}
# Which GEMM peak an artefact's utilization is measured against.
_PEAK_PRECISION = {"fp32": "fp32", "fp16": "fp32", "int8": "int8"}


def make_runners(models: dict[str, Path], threads: int) -> list[Runner]:
    """One runner per artefact; torch is imported only when the PyTorch checkpoint is measured."""
    runners: list[Runner] = []
    for name, path in models.items():
        if name == "torch_fp32":
            from edgetl.benchmarking import TorchRunner
            from edgetl.training.checkpoint import load_checkpoint

            runners.append(TorchRunner(load_checkpoint(path).build_model(), name, threads))
        elif name.startswith("trt_"):
            from edgetl.runtime.tensorrt import TensorRTRunner

            runners.append(TensorRTRunner(path, name=name))
        else:
            runners.append(OnnxRuntimeRunner(path, name=name, threads=threads))
    return runners


def _execution(runner: Runner, threads: int) -> dict[str, Any]:
    if runner.name.startswith("trt_"):
        return runner.describe()  # type: ignore[attr-defined]
    if isinstance(runner, OnnxRuntimeRunner):
        import onnxruntime as ort

        providers = runner.session.get_providers() if runner.session is not None else runner.providers
        return {"runtime": "onnxruntime", "version": ort.__version__, "providers": providers, "threads": threads}
    import torch

    return {"runtime": "torch", "version": torch.__version__, "providers": ["eager CPU"], "threads": threads}


def _compute(models: dict[str, Path], log: Callable[[str], None], cfg: BenchmarkConfig) -> dict[str, Any]:
    """MACs/parameters of each ONNX file, plus the GEMM peaks that utilization is measured against."""
    from edgetl.perf import count_onnx_macs, measure_gemm_peak

    counts: dict[str, Any] = {}
    for name, path in models.items():
        if name.startswith("onnx_"):
            counts[name] = count_onnx_macs(path, batch=1)
    if "torch_fp32" in models and "onnx_fp32" in counts:
        counts["torch_fp32"] = counts["onnx_fp32"] | {"note": "counted on the exported ONNX graph of this network"}
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
    from edgetl.benchmarking import measure_latency, measure_throughput

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
        kind, precision, runtime = ARTIFACT_DESCRIPTION[runner.name]
        shape = first_batch.shape[1:]
        sweep = [
            measure_throughput(runner, np.resize(first_batch, (size, *shape)), cfg.throughput_iterations)
            for size in cfg.batch_sizes
        ]
        throughput_batch = np.resize(first_batch, (cfg.throughput_batch_size, *first_batch.shape[1:]))
        entry: dict[str, Any] = {
            "file": ARTIFACT_FILES[runner.name],
            "format": kind,
            "precision": precision,
            "runtime": runtime,
            "execution": _execution(runner, cfg.threads),
            "size_bytes": path.stat().st_size,
            "correct": correct,
            "total": len(labels),
            "accuracy": correct / len(labels),
            "predictions": predictions.tolist(),
            "latency_ms": vars(latency[runner.name]),
            "throughput": measure_throughput(runner, throughput_batch, cfg.throughput_iterations),
            "batch_sweep": [item for item in sweep if item is not None],
        }
        runner.deactivate()
        entry["compute"] = _utilization(compute, runner.name, precision, entry["latency_ms"])
        artifacts[runner.name] = entry
    if cfg.memory:
        from edgetl.perf import measure_peak_memory

        log("peak memory of each artefact in a fresh process")
        for name, path in models.items():
            if name.startswith("trt_"):
                artifacts[name]["memory"] = {"note": "not measured: device memory of TensorRT engines is not tracked"}
                continue
            runtime_name = "torch" if name == "torch_fp32" else "onnxruntime"
            try:
                artifacts[name]["memory"] = measure_peak_memory(path, 1, cfg.threads, runtime_name)
            except RuntimeError as error:
                artifacts[name]["memory"] = {"error": str(error).splitlines()[0]}
    return {
        "schema": RESULTS_SCHEMA,
        "machine": describe_machine(),
        "versions": package_versions("torch", "onnxruntime", "numpy"),
        "settings": cfg.model_dump(mode="json"),
        "eval": {"split": "val", "images": len(images), "classes": classes, "labels": list(labels)},
        "peaks": compute["peaks"],
        "artifacts": artifacts,
    }


def _utilization(compute: dict[str, Any], name: str, precision: str, latency: dict[str, Any]) -> dict[str, Any] | None:
    from edgetl.perf import compute_utilization

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


class BenchmarkStage(Stage):
    name = "benchmark"

    def _names(self, ctx: BuildContext) -> list[str]:
        """The profile's artefacts, plus the TensorRT engine when the package stage built one here."""
        names = list(ctx.profile.benchmarked_artifacts)
        engine = ctx.results["package"].summary.get("engine") if "package" in ctx.results else None
        if engine:
            names.append(f"trt_{engine['sidecar']['options']['precision']}")
        return names

    def _models(self, ctx: BuildContext) -> dict[str, Path]:
        return {name: ctx.results[ARTIFACT_STAGE[name]].path(ARTIFACT_FILES[name]) for name in self._names(ctx)}

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        artifacts = {
            name: ctx.results[ARTIFACT_STAGE[name]].files.get(ARTIFACT_FILES[name]) for name in self._names(ctx)
        }
        return {
            "benchmark": profile_section(ctx.profile, "benchmark"),
            "artifacts": artifacts,
            "split": ctx.results["data"].files[SPLIT_FILE],
            "machine": machine_signature(),
            "versions": package_versions("torch", "onnxruntime", "numpy"),
        }

    def run(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        from edgetl.preprocessing import read_preprocessing

        pre = read_preprocessing(ctx.results["finetune"].path(PREPROCESSING_FILE))
        split = read_split(ctx.results["data"].path(SPLIT_FILE))
        paths, labels = split_paths(split, "val")
        results = measure_models(
            self._models(ctx),
            paths,
            labels,
            split["classes"],
            pre,
            ctx.profile.benchmark,
            log=lambda message: ctx.log.stage(self.name, message),
        )
        write_json_atomic(out / RESULTS_FILE, results)
        return {
            name: {"accuracy": a["accuracy"], "p50_ms": a["latency_ms"]["p50"]}
            for name, a in results["artifacts"].items()
        }
