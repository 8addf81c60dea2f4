"""Benchmark stage: measure every artefact the same way, on val images the model never saw.

All artefacts get identical inputs: val images preprocessed by the runtime's own preprocessing.
Output: `benchmark/results.json` (raw measurements, per-image predictions included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import DataError
from edgetl.files import write_json_atomic
from edgetl.machine import describe_machine, machine_signature
from edgetl.profile import profile_section
from edgetl.runtime.predictor import MODEL_FILES
from edgetl.runtime.runners import OnnxRuntimeRunner, Runner
from edgetl.stages.base import BuildContext, Stage, package_versions
from edgetl.stages.data import SPLIT_FILE, read_split, split_paths
from edgetl.stages.finetune import CHECKPOINT_FILE, PREPROCESSING_FILE

RESULTS_FILE = "benchmark/results.json"
RESULTS_SCHEMA = "edgetl.benchmark/1"

ARTIFACT_FILES = {"torch_fp32": CHECKPOINT_FILE, **MODEL_FILES}
ARTIFACT_STAGE = {"torch_fp32": "finetune", "onnx_fp32": "export", "onnx_int8": "optimize"}
ARTIFACT_DESCRIPTION = {
    "torch_fp32": ("pytorch", "fp32", "PyTorch eager"),
    "onnx_fp32": ("onnx", "fp32", "ONNX Runtime CPU"),
    "onnx_int8": ("onnx", "int8", "ONNX Runtime CPU"),
}


class BenchmarkStage(Stage):
    name = "benchmark"

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        artifacts = {
            name: ctx.results[ARTIFACT_STAGE[name]].files.get(ARTIFACT_FILES[name])
            for name in ctx.profile.benchmark.artifacts
        }
        return {
            "benchmark": profile_section(ctx.profile, "benchmark"),
            "artifacts": artifacts,
            "split": ctx.results["data"].files[SPLIT_FILE],
            "machine": machine_signature(),
            "versions": package_versions("torch", "onnxruntime", "numpy"),
        }

    def _runners(self, ctx: BuildContext) -> list[Runner]:
        from edgetl.benchmarking import TorchRunner
        from edgetl.training.checkpoint import load_checkpoint

        threads = ctx.profile.benchmark.threads
        runners: list[Runner] = []
        for name in ctx.profile.benchmark.artifacts:
            path = ctx.results[ARTIFACT_STAGE[name]].path(ARTIFACT_FILES[name])
            if name == "torch_fp32":
                runners.append(TorchRunner(load_checkpoint(path).build_model(), name, threads))
            else:
                runners.append(OnnxRuntimeRunner(path, name=name, threads=threads))
        return runners

    def run(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        from edgetl.benchmarking import measure_latency, measure_throughput
        from edgetl.preprocessing import read_preprocessing

        cfg = ctx.profile.benchmark
        pre = read_preprocessing(ctx.results["finetune"].path(PREPROCESSING_FILE))
        split = read_split(ctx.results["data"].path(SPLIT_FILE))
        paths, labels = split_paths(split, "val")
        if not paths:
            raise DataError(
                "val split is empty: nothing to evaluate on", hint="add images to val/ or raise val_fraction"
            )
        runners = self._runners(ctx)
        ctx.log.stage(self.name, f"accuracy of {', '.join(r.name for r in runners)} on {len(paths)} val images")
        logits: dict[str, list[np.ndarray]] = {r.name: [] for r in runners}
        for runner in runners:
            runner.activate()
        first_batch: np.ndarray | None = None
        for start in range(0, len(paths), cfg.eval_batch_size):
            batch = pre.batch(paths[start : start + cfg.eval_batch_size])
            if first_batch is None:
                first_batch = batch
            for runner in runners:
                logits[runner.name].append(runner.infer_any_batch(batch))
        assert first_batch is not None

        ctx.log.stage(
            self.name,
            f"latency at batch 1, {cfg.threads} thread(s): {cfg.warmup} warm-up + {cfg.iterations} runs each, "
            f"interleaved in {cfg.rounds} rounds",
        )
        latency = measure_latency(runners, first_batch[:1], cfg.warmup, cfg.iterations, cfg.rounds)
        throughput_batch = np.resize(first_batch, (cfg.throughput_batch_size, *first_batch.shape[1:]))
        artifacts: dict[str, Any] = {}
        for runner in runners:
            predictions = np.concatenate(logits[runner.name]).argmax(axis=1)
            correct = int((predictions == np.asarray(labels)).sum())
            file = ctx.results[ARTIFACT_STAGE[runner.name]].path(ARTIFACT_FILES[runner.name])
            kind, precision, runtime = ARTIFACT_DESCRIPTION[runner.name]
            artifacts[runner.name] = {
                "file": ARTIFACT_FILES[runner.name],
                "format": kind,
                "precision": precision,
                "runtime": runtime,
                "size_bytes": file.stat().st_size,
                "correct": correct,
                "total": len(labels),
                "accuracy": correct / len(labels),
                "predictions": predictions.tolist(),
                "latency_ms": vars(latency[runner.name]),
                "throughput": measure_throughput(runner, throughput_batch, cfg.throughput_iterations),
            }
            runner.deactivate()
        results = {
            "schema": RESULTS_SCHEMA,
            "machine": describe_machine(),
            "versions": package_versions("torch", "onnxruntime", "numpy"),
            "settings": profile_section(ctx.profile, "benchmark"),
            "eval": {"split": "val", "images": len(paths), "classes": split["classes"], "labels": list(labels)},
            "artifacts": artifacts,
        }
        write_json_atomic(out / RESULTS_FILE, results)
        return {name: {"accuracy": a["accuracy"], "p50_ms": a["latency_ms"]["p50"]} for name, a in artifacts.items()}
