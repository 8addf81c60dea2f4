"""Package stage: the device bundle for the profile's target, and the TensorRT engine where it can be built here.

Every build writes `bundle/` (see `edgetl.bundle`): the deployed ONNX, labels, preprocessing,
reference images with the logits ONNX Runtime gives on them, and, for TensorRT targets, the engine
build options and the equivalent `trtexec` command. When the target's engine may be built on this
machine (not a Jetson) and TensorRT + pycuda are importable, the engine is built, verified on the
reference images and benchmarked alongside the other artefacts; otherwise the stage says why not
and the engine is built on the device with `edgetl engine build`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edgetl import __version__, layout
from edgetl.backends import ARTIFACTS, Backend, backend_for, get_backend
from edgetl.bundle import verify_engine, write_bundle
from edgetl.data.split import read_split
from edgetl.machine import package_versions
from edgetl.profile import Profile, profile_section
from edgetl.stages.base import BuildContext, Stage
from edgetl.targets import Target, get_target


def shipped_artifact(ctx: BuildContext) -> str:
    """The artefact that goes into the bundle: the one deployed (never the torch checkpoint).

    TensorRT targets ship the ONNX model their engine is built from (on the device, or here).
    """
    profile = ctx.profile
    target = get_target(profile.target)
    fallback = target.deployed_artifact(profile.optimize.int8.enabled)
    if target.uses_tensorrt:
        name = profile.deployed_artifact
        if name == "onnx_fp32" and profile.strongly_typed_fp16_engine:
            return "onnx_fp16"  # a strongly typed network takes fp16 from the model's own types
        return name if ARTIFACTS[name].format == "onnx" else fallback
    name = ctx.deployed_artifact()
    return name if ARTIFACTS[name].backend != "torch" else fallback


def engine_options(profile: Profile, target: Target, fixed_batch: int | None) -> dict[str, Any] | None:
    """TensorRT build options: the profile's `tensorrt:` section over the target's defaults."""
    if target.engine is None:
        return None
    cfg = profile.tensorrt
    precision = target.engine_precision(profile.optimize.int8.enabled)
    if fixed_batch is not None:
        batches = {"min_batch": fixed_batch, "opt_batch": fixed_batch, "max_batch": fixed_batch}
    else:
        batches = {
            "min_batch": cfg.min_batch,
            "opt_batch": cfg.opt_batch,
            "max_batch": cfg.max_batch or max(target.engine.max_batch, cfg.opt_batch),
        }
    return {
        "precision": precision,
        **batches,
        "workspace_mb": cfg.workspace_mb or target.engine.workspace_mb,
        "timing_cache": layout.BUNDLE_TIMING_CACHE if cfg.timing_cache else None,
        "dla_core": cfg.dla_core,
        "gpu_fallback": cfg.gpu_fallback,
        "hardware_compatibility": cfg.hardware_compatibility,
        "version_compatible": cfg.version_compatible,
        "builder_optimization_level": cfg.builder_optimization_level,
        "strongly_typed": cfg.strongly_typed,
    }


def tensorrt_unavailable_reason(target: Target) -> str | None:
    """Why the engine is not built on this machine, or None when it is."""
    if not target.uses_tensorrt:
        return f"target {target.name} runs {target.runtime}; no engine"
    if target.build_on_device:
        return f"{target.name} engines must be built on the device: edgetl engine build <run>/bundle"
    missing = [name for name in get_backend("tensorrt").requires if importlib.util.find_spec(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed on this machine: build on the GPU with edgetl engine build"
    return None


def pixels_model_unavailable(form: str, target: Target, artifact: str, model: Path) -> str | None:
    """Why the bundle gets no model_pixels.onnx, or None when it does."""
    from edgetl.onnx import tools as onnx_tools

    if form == "off":
        return "package.pixels_model is off"
    if target.uses_tensorrt:
        return (
            "TensorRT targets: the engine is built from model.onnx and takes float32 NCHW tensors preprocessed as "
            "preprocessing.json says (TensorRT's resize has no antialiasing, so the resize stays outside the engine)"
        )
    if ARTIFACTS[artifact].format != "onnx":
        return f"the shipped model {artifact} is {ARTIFACTS[artifact].format}, not ONNX"
    from edgetl.onnx.pixels import form_unavailable

    return form_unavailable(onnx_tools.load_model(model), form)  # type: ignore[arg-type]


def reference_sample(paths: list[Path], labels: list[int], count: int) -> list[tuple[Path, int]]:
    """`count` val images spread evenly over the (class-sorted) val list, so every class is represented."""
    if not paths:
        return []
    picks = np.unique(np.linspace(0, len(paths) - 1, num=min(count, len(paths))).round().astype(int))
    return [(paths[i], labels[i]) for i in picks]


class PackageStage(Stage):
    name = "package"

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        artifact = shipped_artifact(ctx)
        target = get_target(ctx.profile.target)
        item = ARTIFACTS[artifact]
        stage = ctx.results[item.stage]
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
            "web_runtime": self._web_runtime(ctx).identity() if self._web_runtime(ctx) else None,
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
        ranked = ctx.results["benchmark"].summary.get("device_candidates") or []
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

    def run(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        from edgetl.onnx import tools as onnx_tools
        from edgetl.preprocessing import read_preprocessing

        profile = ctx.profile
        target = get_target(profile.target)
        artifact = shipped_artifact(ctx)
        model = ctx.artifact_path(artifact)
        backend = backend_for(artifact)
        pre = read_preprocessing(ctx.results["finetune"].path(layout.PREPROCESSING))
        split = read_split(ctx.results["data"].path(layout.SPLIT))
        paths, labels = split.paths("val")
        references = reference_sample(paths, labels, profile.tensorrt.verify_images)
        inputs = pre.batch([p for p, _ in references])
        with backend.make_runner(model, artifact, profile.benchmark.threads) as runner:
            logits = runner.infer_any_batch(inputs)
        pixels = self._pixels_model(ctx, out, model, artifact, pre, references, (paths, labels))
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
            target=_target_record(target, backend),
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
            web_runtime=self._web_runtime(ctx),
        )
        if target.browser:
            runtime = self._web_runtime(ctx)
            ctx.log.stage(
                self.name,
                f"web page with onnxruntime-web {runtime.version} from {runtime.source}"
                if runtime
                else "web page loads onnxruntime-web from a CDN: no local copy (offline build)",
            )
        ctx.log.stage(
            self.name,
            f"device bundle for {target.name}: {artifact}, {len(references)} reference images, {len(files)} files",
        )
        summary: dict[str, Any] = {
            "target": target.name,
            "artifact": artifact,
            "bundle": layout.BUNDLE_DIR,
            "engine": None,
            "pixels_model": {k: v for k, v in pixels.items() if k not in ("path", "reference_logits")},
        }
        reason = tensorrt_unavailable_reason(target)
        if options is not None and reason is None:
            val = (pre, paths, labels, split.classes)
            summary["engine"] = self._build_engine(ctx, out, options, val)
        elif options is not None:
            summary["engine_not_built"] = reason
            ctx.log.stage(self.name, f"TensorRT engine not built here: {reason}")
        return summary

    def _pixels_model(
        self,
        ctx: BuildContext,
        out: Path,
        model: Path,
        artifact: str,
        pre: Any,
        references: list[tuple[Path, int]],
        val: tuple[list[Path], list[int]],
    ) -> dict[str, Any]:
        """model_pixels.onnx (preprocessing in the graph), its reference logits and its measurements; or why not."""
        from edgetl.measure.pixels_model import measure_pixels_model
        from edgetl.onnx.pixels import add_preprocessing, pixels_batch

        form = ctx.profile.package.pixels_model
        reason = pixels_model_unavailable(form, get_target(ctx.profile.target), artifact, model)
        if reason is not None:
            ctx.log.stage(self.name, f"no in-graph preprocessing model: {reason}")
            return {"made": False, "reason": reason}
        path = out / "pixels" / layout.BUNDLE_PIXELS_MODEL
        made = add_preprocessing(model, path, pre, form)  # type: ignore[arg-type]
        threads = ctx.profile.benchmark.threads
        measured = measure_pixels_model(path, model, pre, form, val[0], val[1], threads)  # type: ignore[arg-type]
        from edgetl.backends.onnxruntime.runner import OnnxRuntimeRunner

        with OnnxRuntimeRunner(path, threads=threads) as runner:
            logits = [runner.infer_any_batch(pixels_batch(pre, image, form))[0] for image, _ in references]  # type: ignore[arg-type]
        latency = measured["latency"] or {}
        ctx.log.stage(
            self.name,
            f"in-graph preprocessing ({form}): top-1 agreement with the PIL path {measured['agreement']}/"
            f"{measured['images']} val images, max |logit diff| {measured['max_abs_logit_diff']:.3g}; "
            f"{latency.get('pixels_model_ms', 0):.2f} ms vs {latency.get('model_ms', 0):.2f} ms for the model alone "
            f"(+{latency.get('added_ms', 0):.2f} ms; Python preprocessing "
            f"{latency.get('python_preprocessing_ms', 0):.2f} ms)",
        )
        return {
            "made": True,
            **made,
            "path": path,
            "reference_logits": np.stack(logits) if logits else np.zeros((0, 0), np.float32),
            "measured": measured,
        }

    def _build_engine(
        self, ctx: BuildContext, out: Path, options: dict[str, Any], val: tuple[Any, list[Path], list[int], list[str]]
    ) -> dict[str, Any]:
        """Build and verify the engine on this machine's GPU (nvidia-gpu target with TensorRT installed)."""
        from edgetl.backends.tensorrt.build import build_engine
        from edgetl.backends.tensorrt.options import EngineOptions
        from edgetl.bundle import read_bundle

        bundle_dir = out / layout.BUNDLE_DIR
        resolved = dict(options)
        if resolved.get("timing_cache"):
            resolved["timing_cache"] = str(bundle_dir / resolved["timing_cache"])
        log = lambda message: ctx.log.stage(self.name, message)  # noqa: E731
        sidecar = build_engine(
            bundle_dir / "model.onnx", bundle_dir / layout.BUNDLE_ENGINE, EngineOptions.from_dict(resolved), log=log
        )
        verification = verify_engine(read_bundle(bundle_dir), bundle_dir / layout.BUNDLE_ENGINE, log)
        return {
            "file": layout.ENGINE,
            "sidecar": sidecar.to_dict(),
            "verification": verification,
            "measured": self._measure_engine(
                ctx, bundle_dir / layout.BUNDLE_ENGINE, sidecar.engine_options.precision, val
            ),
        }

    def _measure_engine(
        self, ctx: BuildContext, engine: Path, precision: str, val: tuple[Any, list[Path], list[int], list[str]]
    ) -> dict[str, Any]:
        """The engine on val images with the same harness as every other artefact (the report merges it)."""
        from edgetl.backends.tensorrt import engine_artifact
        from edgetl.measure.artifacts import measure_models

        pre, paths, labels, classes = val
        results = measure_models(
            {engine_artifact(precision): engine}, paths, labels, classes, pre, ctx.profile.benchmark
        )
        return results["artifacts"]


def _target_record(target: Target, shipped: Backend) -> dict[str, Any]:
    """The target as the bundle states it; the device steps are the shipped runtime's when it is not the target's."""
    own_runtime = shipped.name == target.runtime or not shipped.on_device
    return {
        "name": target.name,
        "description": target.description,
        "runtime": target.runtime,
        "precisions": list(target.precisions),
        "software": target.software,
        "build_on_device": target.build_on_device,
        "device_memory_mb": target.device_memory_mb,
        "on_device": list(target.on_device if own_runtime else shipped.on_device),
        "notes": target.notes,
    }
