"""Convert stage: other runtimes' artefacts from the same validated ONNX models (`convert.runtimes`).

Each converted artefact names its source in the catalogue (`openvino_int8` <- `onnx_int8`): the
conversion never re-quantizes or re-calibrates, so the accuracy gate the optimize stage applied
holds for the model, and what is left to check is the runtime. That check is measured here on
real val images (top-1 agreement and max |logit difference| against the source under ONNX
Runtime) and again on the whole val split by the benchmark stage before anything converted ships.
Output: the artefacts' files and `convert/conversions.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgetl import layout
from edgetl.backends import ARTIFACTS, backend_for, get_backend, quantizes
from edgetl.data.split import read_split
from edgetl.errors import DependencyError
from edgetl.files import write_json_atomic
from edgetl.machine import package_versions
from edgetl.plan import build_plan
from edgetl.profile import Profile, profile_section
from edgetl.stages.base import BuildContext, Stage
from edgetl.summaries import ConvertSummary

PARITY_IMAGES = 32


def converted_artifacts(profile: Profile) -> list[str]:
    return [name for name in build_plan(profile).produced_artifacts if ARTIFACTS[name].stage == "convert"]


def check_converters(profile: Profile) -> None:
    """Refuse, in one line, a profile whose conversions this machine cannot run (`pipeline.build`, before any stage)."""
    for runtime in sorted({ARTIFACTS[name].backend for name in converted_artifacts(profile)}):
        reason = get_backend(runtime).cannot_convert()
        if reason:
            raise DependencyError(f"convert.runtimes lists {runtime}, but {reason}")


class ConvertStage(Stage):
    name = "convert"
    summary_type = ConvertSummary

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        names = converted_artifacts(ctx.profile)
        # Sources made by this stage (litert_fp32 for litert_int8) are covered by their own sources.
        sources = sorted({ARTIFACTS[n].source or "" for n in names} - {"", *names})
        packages = [
            p
            for runtime in sorted({ARTIFACTS[n].backend for n in names})
            for p in get_backend(runtime).versioned_packages
        ]
        return {
            "convert": profile_section(ctx.profile, "convert"),
            "artifacts": names,
            "sources": {source: ctx.artifact_digest(source) for source in sources},
            "split": ctx.results["data"].files[layout.SPLIT],
            # Only a conversion that quantizes (litert_int8) depends on how many images calibrate it.
            "calibration": ctx.profile.optimize.int8.calibration_images if any(quantizes(n) for n in names) else None,
            "versions": package_versions("onnxruntime", *packages),
        }

    def run(self, ctx: BuildContext, out: Path) -> ConvertSummary:
        names = converted_artifacts(ctx.profile)
        if not names:
            return ConvertSummary(artifacts={})
        from edgetl.preprocessing import read_preprocessing

        pre = read_preprocessing(ctx.results["finetune"].path(layout.PREPROCESSING))
        split = read_split(ctx.results["data"].path(layout.SPLIT))
        paths, _ = split.paths("val")
        images = pre.batch(paths[:PARITY_IMAGES]) if paths else None
        # Converters that quantize (LiteRT int8) calibrate on the optimize stage's pool: train + holdout, never val.
        pool, _ = split.paths("calibration_pool")
        calibration = pool[: ctx.profile.optimize.int8.calibration_images]
        options: dict[str, Any] = {"input_shape": list(pre.input_shape)}
        records: dict[str, Any] = {}
        for name in names:
            item = ARTIFACTS[name]
            assert item.source is not None
            source = out / ARTIFACTS[item.source].file if item.source in names else ctx.artifact_path(item.source)
            target = out / item.file
            if quantizes(name) and "calibration" not in options:
                options["calibration"] = pre.batch(calibration)
            record = backend_for(name).convert(source, target, {**options, "precision": item.precision})
            if images is not None:
                record["parity"] = _parity(name, target, item.source, source, images, ctx.profile.benchmark.threads)
                parity = record["parity"]
                ctx.log.stage(
                    self.name,
                    f"{name} from {item.source}: top-1 agreement {parity['top1_agreement']:.0%} on "
                    f"{parity['images']} val images, max |logit diff| {parity['max_abs_logit_diff']:.2e}",
                )
            records[name] = record
        write_json_atomic(out / layout.CONVERSIONS, records)
        return ConvertSummary(artifacts=records)


def _parity(name: str, path: Path, source_name: str, source: Path, images: np.ndarray, threads: int) -> dict[str, Any]:
    """The converted model against its source on real images: same predictions, how close the logits."""
    with backend_for(source_name).make_runner(source, source_name, threads) as reference:
        expected = reference.infer_any_batch(images)
    with backend_for(name).make_runner(path, name, threads) as runner:
        actual = runner.infer_any_batch(images)
    return {
        "images": int(len(images)),
        "against": source_name,
        "max_abs_logit_diff": float(np.abs(expected - actual).max()),
        "top1_agreement": float((expected.argmax(1) == actual.argmax(1)).mean()),
    }
