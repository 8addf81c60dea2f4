"""`edgetl bench BUNDLE`: measure a device bundle on the device itself, without torch or the dataset.

On a Jetson or a Pi there is no PyTorch, no training data and often no `edgetl build`; there is
the bundle. This runs the bundle's ONNX model (ONNX Runtime) and, once `edgetl engine build` made
it, its TensorRT engine through the same harness as the build's benchmark stage (warm-up,
interleaved rounds, percentiles, batch sweep; CUDA events for the engine) on the bundle's
reference images, and checks both against the reference logits recorded on the build machine.
Accuracy on 32 reference images is a smoke test, not an evaluation: the build's report has that.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgetl import layout
from edgetl.backends import backend_for
from edgetl.bundle import DEVICE_CHOICE_SCHEMA, Bundle, read_bundle, reference_images
from edgetl.errors import UserInputError, VerificationError
from edgetl.files import sha256_file, write_json_atomic, write_text_atomic
from edgetl.measure.device_bench import render

SCHEMA = "edgetl.bundle-bench/1"


def bundle_models(bundle: Bundle) -> dict[str, Path]:
    """The bundle's model under its artefact name, plus the engine (trt_<precision>) when built."""
    from edgetl.backends.tensorrt import engine_artifact, read_sidecar, sidecar_path

    models = {bundle.info["model"]["artifact"]: bundle.model_path}
    engine = bundle.engine_path
    if engine.is_file() and sidecar_path(engine).is_file():  # a damaged sidecar is one line naming it
        models[engine_artifact(read_sidecar(engine).engine_options.precision)] = engine
    return models


def bench_bundle(
    bundle_dir: str | Path,
    output: Path | None = None,
    threads: int = 1,
    iterations: int = 100,
    log: Callable[[str], None] = lambda message: None,
    select: bool = False,
) -> dict[str, Any]:
    """Measure every model in the bundle on this device; write bench.json and bench.md into `output`.

    With `select`, the bundle's candidates are measured too (those whose runtime is installed here), in
    the same interleaved run, and the fastest one that agrees with the reference is recorded in the
    bundle's device.json: `edgetl predict` and `edgetl.runtime.load` use it from then on.
    """
    from edgetl.measure.artifacts import measure_models
    from edgetl.profile import BenchmarkConfig

    bundle = read_bundle(bundle_dir)
    reference = bundle.reference()
    paths = reference_images(bundle)
    labels = [int(item["label"]) for item in reference["images"]]
    models = bundle_models(bundle)
    not_installed: dict[str, str] = {}
    if select:
        candidates = bundle.candidates()
        if not candidates:
            raise UserInputError(
                f"{bundle.root}: --select needs a bundle with candidates (built for a device that is not the build "
                "machine: raspberry-pi-5, android-arm64); this one has only its model"
            )
        for name, path in candidates.items():
            missing = [m for m in backend_for(name).requires if importlib.util.find_spec(m) is None]
            if missing:
                not_installed[name] = f"{', '.join(missing)} not installed here"
            else:
                models[name] = path
    batches = sorted({1, min(8, len(paths))})
    cfg = BenchmarkConfig(
        threads=threads,
        iterations=iterations,
        batch_sizes=batches,
        throughput_batch_size=batches[-1],
        memory=False,
        compute_peak=False,
        eval_batch_size=batches[-1],
    )
    results = measure_models(models, paths, labels, bundle.labels(), bundle.preprocessing(), cfg, log=log)
    for name, entry in results["artifacts"].items():
        entry["file"] = str(models[name].relative_to(bundle.root))
        entry["reference_check"] = _reference_check(entry, reference, bundle)
    results["schema"] = SCHEMA
    results["bundle"] = {
        "name": bundle.info["name"],
        "target": bundle.info["target"]["name"],
        "model": bundle.info["model"]["artifact"],
    }
    if select:
        results["selection"] = _select(bundle, results, not_installed)
    out = Path(output) if output else bundle.root / "bench"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / layout.BUNDLE_BENCH_JSON, results)
    write_text_atomic(out / layout.BUNDLE_BENCH_MD, render(results))
    return results


def _select(bundle: Bundle, results: dict[str, Any], not_installed: dict[str, str]) -> dict[str, Any]:
    """The fastest measured model that agrees with the reference, written to the bundle's device.json."""
    measured = results["artifacts"]
    eligible = [n for n, a in measured.items() if a["reference_check"]["passed"] and not n.startswith("trt_")]
    if not eligible:
        raise VerificationError(f"{bundle.root}: no model of the bundle agrees with its reference on this device")
    ranked = sorted(eligible, key=lambda n: measured[n]["latency_ms"]["p50"])
    chosen = ranked[0]
    shipped = bundle.info["model"]["artifact"]
    guess = {shipped: bundle.info["model"].get("build_machine")}
    guess |= {c["artifact"]: c.get("build_machine") for c in bundle.info.get("candidates") or []}
    reason = f"fastest on this device: {chosen} p50 {measured[chosen]['latency_ms']['p50']:.3f} ms"
    if len(ranked) > 1:
        second = ranked[1]
        ratio = measured[second]["latency_ms"]["p50"] / measured[chosen]["latency_ms"]["p50"]
        reason += f", {ratio:.2f}x faster than {second}, measured interleaved in one run"
    selection = {
        "schema": DEVICE_CHOICE_SCHEMA,
        "chosen": chosen,
        "reason": reason,
        "machine": results["machine"],
        "bundle_sha256": sha256_file(bundle.root / layout.BUNDLE_INFO),
        "ranking_here": [
            {
                "artifact": name,
                "p50_ms": measured[name]["latency_ms"]["p50"],
                "agreement": measured[name]["reference_check"]["agreement"],
                "passed": measured[name]["reference_check"]["passed"],
                "build_machine": guess.get(name),
            }
            for name in sorted(measured, key=lambda n: measured[n]["latency_ms"]["p50"])
        ],
        "not_measured": not_installed,
    }
    write_json_atomic(bundle.root / layout.BUNDLE_DEVICE_CHOICE, selection)
    return selection


def _reference_check(entry: dict[str, Any], reference: dict[str, Any], bundle: Bundle) -> dict[str, Any]:
    """Agreement of this model's predictions with the build machine's reference logits."""
    min_agreement = float(bundle.info.get("engine", {}).get("verify_min_agreement", 99.0))
    expected = np.asarray([item["logits"] for item in reference["images"]], dtype=np.float32)
    predictions = np.asarray(entry["predictions"])
    agreement = float((predictions == expected.argmax(axis=1)).mean() * 100.0)
    return {"agreement": agreement, "min_agreement": min_agreement, "passed": agreement >= min_agreement}


__all__ = ["bench_bundle", "bundle_models"]
