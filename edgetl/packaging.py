"""What goes into a device bundle besides the model: engine options, the pixels model, references, the target.

The package stage decides which artefact ships and writes the bundle (`edgetl.bundle.write_bundle`);
the decisions and the pieces it needs are here: the TensorRT build options (the profile's `tensorrt:`
over the target's defaults) and whether an engine can be built on this machine, the in-graph
preprocessing model and its measurements, the reference images, and the target as the bundle states it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgetl import layout
from edgetl.backends import ARTIFACTS, Backend, get_backend
from edgetl.bundle import verify_engine
from edgetl.plan import build_plan
from edgetl.preprocessing import Preprocessing
from edgetl.profile import Profile
from edgetl.targets import Target


def shipped_artifact(profile: Profile, deployed: str) -> str:
    """The artefact that goes into the bundle: the one deployed (never the torch checkpoint).

    TensorRT targets ship the ONNX model their engine is built from (on the device, or here).
    """
    from edgetl.targets import get_target

    target = get_target(profile.target)
    fallback = target.deployed_artifact(profile.optimize.int8.enabled)
    if target.uses_tensorrt:
        name = build_plan(profile).deployed_artifact
        if name == "onnx_fp32" and build_plan(profile).strongly_typed_fp16_engine:
            return "onnx_fp16"  # a strongly typed network takes fp16 from the model's own types
        return name if ARTIFACTS[name].format == "onnx" else fallback
    return deployed if ARTIFACTS[deployed].backend != "torch" else fallback


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


def make_pixels_model(
    form: str,
    target: Target,
    out: Path,
    model: Path,
    artifact: str,
    pre: Preprocessing,
    references: list[tuple[Path, int]],
    val: tuple[list[Path], list[int]],
    threads: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """model_pixels.onnx (preprocessing in the graph), its reference logits and its measurements; or why not."""
    from edgetl.measure.pixels_model import measure_pixels_model
    from edgetl.onnx.pixels import add_preprocessing, pixels_batch

    reason = pixels_model_unavailable(form, target, artifact, model)
    if reason is not None:
        log(f"no in-graph preprocessing model: {reason}")
        return {"made": False, "reason": reason}
    path = out / "pixels" / layout.BUNDLE_PIXELS_MODEL
    made = add_preprocessing(model, path, pre, form)  # type: ignore[arg-type]
    measured = measure_pixels_model(path, model, pre, form, val[0], val[1], threads)  # type: ignore[arg-type]
    from edgetl.backends.onnxruntime.runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(path, threads=threads) as runner:
        logits = [runner.infer_any_batch(pixels_batch(pre, image, form))[0] for image, _ in references]  # type: ignore[arg-type]
    latency = measured["latency"] or {}
    log(
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


def build_engine_here(
    bundle_dir: Path,
    options: dict[str, Any],
    val: tuple[Preprocessing, list[Path], list[int], list[str]],
    benchmark: Any,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Build and verify the engine on this machine's GPU (nvidia-gpu target with TensorRT installed)."""
    from edgetl.backends.tensorrt.build import build_engine
    from edgetl.backends.tensorrt.options import EngineOptions
    from edgetl.bundle import read_bundle

    resolved = dict(options)
    if resolved.get("timing_cache"):
        resolved["timing_cache"] = str(bundle_dir / resolved["timing_cache"])
    sidecar = build_engine(
        bundle_dir / "model.onnx", bundle_dir / layout.BUNDLE_ENGINE, EngineOptions.from_dict(resolved), log=log
    )
    verification = verify_engine(read_bundle(bundle_dir), bundle_dir / layout.BUNDLE_ENGINE, log)
    return {
        "file": layout.ENGINE,
        "sidecar": sidecar.to_dict(),
        "verification": verification,
        "measured": _measure_engine(
            bundle_dir / layout.BUNDLE_ENGINE, sidecar.engine_options.precision, val, benchmark
        ),
    }


def _measure_engine(
    engine: Path, precision: str, val: tuple[Preprocessing, list[Path], list[int], list[str]], benchmark: Any
) -> dict[str, Any]:
    """The engine on val images with the same harness as every other artefact (the report merges it)."""
    from edgetl.backends.tensorrt import engine_artifact
    from edgetl.measure.artifacts import measure_models

    pre, paths, labels, classes = val
    results = measure_models({engine_artifact(precision): engine}, paths, labels, classes, pre, benchmark)
    return results["artifacts"]


def target_record(target: Target, shipped: Backend) -> dict[str, Any]:
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
