"""Package stage: the device bundle for the profile's target, and the TensorRT engine where it can be built here.

Thin: the pieces are `edgetl.packaging`, the bundle is written by `edgetl.bundle.write_bundle`: the
deployed model, labels, preprocessing, reference images and logits, the pixels model, the device's
candidates, the web page for the web target, and for TensorRT targets the engine options (the engine
itself is built here only where TensorRT is installed and the target is not a Jetson).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgetl import __version__, layout
from edgetl.backends import ARTIFACTS, backend_for
from edgetl.bundle import write_bundle
from edgetl.data.split import read_split
from edgetl.machine import package_versions
from edgetl.packaging import (
    build_engine_here,
    engine_options,
    make_pixels_model,
    reference_sample,
    target_record,
    tensorrt_unavailable_reason,
)
from edgetl.profile import profile_section
from edgetl.stages.base import BuildContext, Stage
from edgetl.summaries import BenchmarkSummary, PackageSummary
from edgetl.targets import get_target


def shipped_artifact(ctx: BuildContext) -> str:
    """The artefact that goes into the bundle (`edgetl.packaging.shipped_artifact`)."""
    from edgetl.packaging import shipped_artifact as choose

    return choose(ctx.profile, ctx.deployed_artifact())


class PackageStage(Stage):
    name = "package"
    summary_type = PackageSummary

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        artifact = shipped_artifact(ctx)
        target = get_target(ctx.profile.target)
        item = ARTIFACTS[artifact]
        stage = ctx.results[item.stage]
        web_runtime = self._web_runtime(ctx)
        return {
            "target": asdict(target),
            "tensorrt": profile_section(ctx.profile, "tensorrt"),
            "package": profile_section(ctx.profile, "package"),
            "artifact": artifact,
            "model": [stage.files[item.file], *(stage.files.get(c) for c in item.companions)],
            "candidates": [(name, ctx.artifact_digest(name)) for name in self._candidate_names(ctx, artifact)],
            "split": ctx.results["data"].files[layout.SPLIT],
            "engine_here": tensorrt_unavailable_reason(target),
            "tensorrt_release": str(target.tensorrt_release()),
            "versions": package_versions("onnxruntime", "tensorrt"),
            "web": profile_section(ctx.profile, "web") if target.browser else None,
            "web_runtime": web_runtime.identity() if web_runtime else None,
        }

    @staticmethod
    def _web_runtime(ctx: BuildContext) -> Any:
        """The onnxruntime-web copy a web bundle ships (found, cached or downloaded once), or None."""
        from edgetl.errors import UserInputError
        from edgetl.web import find_web_runtime

        if not get_target(ctx.profile.target).browser:
            return None
        try:
            return find_web_runtime(ctx.profile.web.onnxruntime_web)
        except UserInputError as error:  # name the profile that sent the build there
            raise type(error)(f"{ctx.loaded.path}: {error.message}", hint=error.hint) from None

    @staticmethod
    def _device_ranking(ctx: BuildContext) -> dict[str, dict[str, Any]]:
        """The benchmark's device candidates, best build-machine guess first: artefact -> {p50_ms, rank}."""
        ranked = ctx.summary("benchmark", BenchmarkSummary).device_candidates
        return {c["artifact"]: {"p50_ms": c["p50_ms"], "rank": c["build_machine_rank"]} for c in ranked}

    def _candidate_names(self, ctx: BuildContext, shipped: str) -> list[str]:
        """The other artefacts the device may choose (the benchmark's device candidates), best guess first.

        None for a browser: a page cannot run `edgetl bench --select`; the browser stage times them instead.
        """
        if get_target(ctx.profile.target).browser:
            return []
        return [name for name in self._device_ranking(ctx) if name != shipped]

    def _candidates(self, ctx: BuildContext, shipped: str) -> list[dict[str, Any]]:
        ranking = self._device_ranking(ctx)
        candidates = []
        for name in self._candidate_names(ctx, shipped):
            model = ctx.artifact_path(name)
            candidates.append(
                {
                    "artifact": name,
                    "model": model,
                    "companions": [model.with_suffix(Path(c).suffix) for c in ARTIFACTS[name].companions],
                    "runtime": backend_for(name).name,
                    "precision": ARTIFACTS[name].precision,
                    "build_machine": ranking[name],
                }
            )
        return candidates

    def run(self, ctx: BuildContext, out: Path) -> PackageSummary:
        from edgetl.onnx import tools as onnx_tools
        from edgetl.preprocessing import read_preprocessing

        profile = ctx.profile
        target = get_target(profile.target)
        artifact = shipped_artifact(ctx)
        model = ctx.artifact_path(artifact)
        backend = backend_for(artifact)
        web_runtime = self._web_runtime(ctx)
        pre = read_preprocessing(ctx.results["finetune"].path(layout.PREPROCESSING))
        split = read_split(ctx.results["data"].path(layout.SPLIT))
        paths, labels = split.paths("val")
        references = reference_sample(paths, labels, profile.tensorrt.verify_images)
        inputs = pre.batch([p for p, _ in references])
        with backend.make_runner(model, artifact, profile.benchmark.threads) as runner:
            logits = runner.infer_any_batch(inputs)
        pixels = make_pixels_model(
            profile.package.pixels_model,
            target,
            out,
            model,
            artifact,
            pre,
            references,
            (paths, labels),
            profile.benchmark.threads,
            log=lambda message: ctx.log.stage(self.name, message),
        )
        fixed_batch = onnx_tools.fixed_batch(onnx_tools.load_model(ctx.results["export"].path(layout.ONNX_FP32)))
        options = engine_options(profile, target, fixed_batch)
        files = write_bundle(
            out / layout.BUNDLE_DIR,
            name=profile.name,
            model=model,
            artifact=artifact,
            companions=[model.with_suffix(Path(c).suffix) for c in ARTIFACTS[artifact].companions],
            runtime_label=backend.label,
            labels=list(split.classes),
            preprocessing=pre,
            target=target_record(target, backend),
            engine_options=options,
            tensorrt_release=str(target.tensorrt_release()) if options is not None else None,
            verify_min_agreement=profile.tensorrt.verify_min_agreement,
            input_name=layout.INPUT_NAME,
            input_shape=[fixed_batch or -1, *pre.input_shape],
            reference_images=references,
            reference_inputs=inputs,
            reference_logits=logits,
            precision=ARTIFACTS[artifact].precision,
            pixels=pixels,
            edgetl_version=__version__,
            candidates=self._candidates(ctx, artifact),
            shipped_rank=self._device_ranking(ctx).get(artifact),
            web_app=target.browser,
            web_runtime=web_runtime,
        )
        if target.browser:
            ctx.log.stage(
                self.name,
                f"web page with onnxruntime-web {web_runtime.version} from {web_runtime.source}"
                if web_runtime
                else "web page loads onnxruntime-web from a CDN: no local copy (offline build)",
            )
        ctx.log.stage(
            self.name,
            f"device bundle for {target.name}: {artifact}, {len(references)} reference images, {len(files)} files",
        )
        engine, reason = None, tensorrt_unavailable_reason(target)
        if options is not None and reason is None:
            val = (pre, paths, labels, split.classes)
            engine = build_engine_here(
                out / layout.BUNDLE_DIR, options, val, profile.benchmark, lambda m: ctx.log.stage(self.name, m)
            )
        elif options is not None:
            ctx.log.stage(self.name, f"TensorRT engine not built here: {reason}")
        return PackageSummary(
            target=target.name,
            artifact=artifact,
            bundle=layout.BUNDLE_DIR,
            pixels_model={k: v for k, v in pixels.items() if k not in ("path", "reference_logits")},
            engine=engine,
            engine_not_built=reason if options is not None and engine is None else None,
        )
