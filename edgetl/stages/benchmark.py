"""Benchmark stage: every artefact measured the same way on val images, then the one that ships is chosen.

The harness is `edgetl.measure.artifacts.measure_models` (also behind `edgetl bench`); which
artefact is deployed is `edgetl.measure.select.choose_deployed`: the target's, or on
`deploy: fastest` the fastest measured one that passes. The package stage bundles that one.
Output: `benchmark/results.json` (raw measurements, per-image predictions, latency samples and the
deployment decision).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl import layout
from edgetl.data.split import read_split
from edgetl.files import write_json_atomic
from edgetl.machine import machine_signature, package_versions
from edgetl.plan import build_plan
from edgetl.profile import profile_section
from edgetl.stages.base import BuildContext, Stage
from edgetl.summaries import BenchmarkSummary


class BenchmarkStage(Stage):
    name = "benchmark"
    summary_type = BenchmarkSummary

    def _models(self, ctx: BuildContext) -> dict[str, Path]:
        return {name: ctx.artifact_path(name) for name in build_plan(ctx.profile).benchmarked_artifacts}

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        return {
            "benchmark": profile_section(ctx.profile, "benchmark"),
            "budgets": profile_section(ctx.profile, "budgets"),  # they decide what `deploy: fastest` ships
            "target": ctx.profile.target,
            "artifacts": {name: ctx.artifact_digest(name) for name in build_plan(ctx.profile).benchmarked_artifacts},
            "split": ctx.results["data"].files[layout.SPLIT],
            "machine": machine_signature(),
            "versions": package_versions("torch", "onnxruntime", "openvino", "numpy"),
        }

    def run(self, ctx: BuildContext, out: Path) -> BenchmarkSummary:
        from edgetl.measure.artifacts import measure_models
        from edgetl.measure.select import choose_deployed, device_candidates
        from edgetl.preprocessing import read_preprocessing

        pre = read_preprocessing(ctx.results["finetune"].path(layout.PREPROCESSING))
        split = read_split(ctx.results["data"].path(layout.SPLIT))
        paths, labels = split.paths("val")

        results = measure_models(
            self._models(ctx),
            paths,
            labels,
            split.classes,
            pre,
            ctx.profile.benchmark,
            log=lambda message: ctx.log.stage(self.name, message),
        )
        results["deployment"] = choose_deployed(results, ctx.profile)
        results["deployment"]["device_candidates"] = device_candidates(results, ctx.profile)
        ctx.log.stage(self.name, f"deploying {results['deployment']['artifact']}: {results['deployment']['reason']}")
        write_json_atomic(out / layout.BENCHMARK_RESULTS, results)
        return BenchmarkSummary(
            artifacts={
                name: {"accuracy": a["accuracy"], "p50_ms": a["latency_ms"]["p50"]}
                for name, a in results["artifacts"].items()
            },
            deployed=results["deployment"]["artifact"],
            device_candidates=results["deployment"]["device_candidates"],
        )
