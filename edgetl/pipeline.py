"""`edgetl build`: run the stages, then publish artefacts, report and manifest into the run directory.

Stages write into fingerprinted cache folders under `<run>/.edgetl/cache`; nothing in the run
directory itself changes until every stage has succeeded. Then the files are published (hard
links, each renamed into place atomically), files of the previous build that this one no longer
produces are removed, and `manifest.json` is written last: it is the commit point.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetl import __version__, layout
from edgetl.console import Log
from edgetl.errors import BudgetExceeded, ProfileError
from edgetl.files import (
    first_symlinked_folder,
    nearest_existing,
    owned_path,
    publish_file,
    read_json,
    remove_tree,
    sha256_file,
    write_json_atomic,
    write_text_atomic,
)
from edgetl.lock import RunLock
from edgetl.machine import describe_machine, package_versions
from edgetl.profile import LoadedProfile, load_profile
from edgetl.report.compose import compose_report, publish_report
from edgetl.stages.base import BuildContext, Stage, StageResult
from edgetl.stages.cache import execute, prune_cache
from edgetl.stages.convert import check_converters
from edgetl.summaries import PackageSummary
from edgetl.targets import get_target
from edgetl.training.distributed import DistributedEnv

MANIFEST_SCHEMA = "edgetl.manifest/1"

DETERMINISM = {
    "deterministic": [
        "data splits and calibration set (seeded)",
        "training on CPU with a fixed seed and thread count (same metrics, same checkpoint)",
        "ONNX export and int8 quantization of a given checkpoint",
    ],
    "not_deterministic": [
        "latency and throughput (machine load, frequency scaling)",
        "training on GPUs or with a different number of threads (floating-point reduction order)",
    ],
}


@dataclass
class BuildOutcome:
    run_dir: Path
    report: dict[str, Any] | None  # None for a partial build (`edgetl train`) and on ranks other than 0
    results: dict[str, StageResult]
    seconds: float

    def raise_for_budgets(self) -> None:
        """BudgetExceeded (exit code 3) naming every violated budget and by how much."""
        if self.report is None:
            return
        failed = [b["message"] for b in self.report["budgets"] if not b["passed"]]
        if failed:
            raise BudgetExceeded(
                "budget violated: " + "; ".join(failed), hint=f"report: {self.run_dir / layout.REPORT_MD}"
            )


# The bundle comes last: on `deploy: fastest` what ships is decided by the benchmark's measurements.
STAGE_ORDER = ("data", "finetune", "export", "optimize", "convert", "benchmark", "package")


def default_stages(until: str | None = None) -> list[Stage]:
    from edgetl.stages.benchmark import BenchmarkStage
    from edgetl.stages.convert import ConvertStage
    from edgetl.stages.data import DataStage
    from edgetl.stages.export import ExportStage
    from edgetl.stages.finetune import FinetuneStage
    from edgetl.stages.optimize import OptimizeStage
    from edgetl.stages.package import PackageStage

    stages: list[Stage] = [
        DataStage(),
        FinetuneStage(),
        ExportStage(),
        OptimizeStage(),
        ConvertStage(),
        BenchmarkStage(),
        PackageStage(),
    ]
    if until is None:
        return stages
    return stages[: STAGE_ORDER.index(until) + 1]


def build(
    profile_path: str | Path | LoadedProfile,
    output_dir: Path | None = None,
    force: bool = False,
    resume: bool = False,
    until: str | None = None,
    log: Log | None = None,
    shared_cache: Path | None = None,
    on_epoch_end: Callable[[Any], None] | None = None,
    tuning: dict[str, Any] | None = None,
) -> BuildOutcome:
    """Run the stages (all, or up to `until`) and publish the run directory.

    Budgets are checked by `BuildOutcome.raise_for_budgets`. Under torchrun, ranks other than 0
    only take part in distributed stages and return without publishing anything.
    """
    started = time.perf_counter()
    log = log or Log()
    loaded = profile_path if isinstance(profile_path, LoadedProfile) else load_profile(profile_path)
    run_dir = (output_dir.resolve() if output_dir else loaded.output_dir).resolve()
    dist = DistributedEnv.from_env()
    created = _first_missing(run_dir) if dist.is_main else None
    if dist.is_main:
        check_run_dir(run_dir, loaded)
    stages = default_stages(until)
    if until is None and get_target(loaded.profile.target).browser:
        from edgetl.stages.browser import BrowserStage

        stages.append(BrowserStage())  # after the bundle: the shipped page in Chromium on this machine
    if until is None and loaded.profile.on_device is not None:
        from edgetl.stages.device import DeviceStage

        stages.append(DeviceStage())  # after the bundle: measured on the device itself, over SSH
    if any(stage.name == "convert" for stage in stages):
        check_converters(loaded.profile)  # in milliseconds, not after the fine-tune
    last_distributed = max((i for i, s in enumerate(stages) if s.distributed), default=-1)
    ctx = BuildContext(
        loaded=loaded,
        run_dir=run_dir,
        log=log,
        force=force,
        resume=resume,
        dist=dist,
        shared_cache=shared_cache,
        on_epoch_end=on_epoch_end,
    )
    dist.init(dist.device(loaded.profile.finetune.device))
    try:
        with RunLock(run_dir) if dist.is_main else contextlib.nullcontext():
            for index, stage in enumerate(stages):
                if ctx.dist.enabled and index > last_distributed:
                    # The multi-process part is over: rank 0 carries on alone, the others are done.
                    ctx.dist.barrier()
                    ctx.dist.shutdown()
                    if not dist.is_main:
                        return BuildOutcome(run_dir, None, ctx.results, time.perf_counter() - started)
                    ctx.dist = DistributedEnv()
                execute(stage, ctx)
            if ctx.dist.enabled:  # `edgetl train`: the last stage was the distributed one
                ctx.dist.barrier()
                if not dist.is_main:
                    return BuildOutcome(run_dir, None, ctx.results, time.perf_counter() - started)
            report = None
            if "benchmark" in ctx.results:
                results = read_json(ctx.results["benchmark"].path(layout.BENCHMARK_RESULTS))
                engine = ctx.summary("package", PackageSummary).engine if "package" in ctx.results else None
                results["artifacts"].update((engine or {}).get("measured") or {})  # an engine built here, measured
                summaries = {name: result.summary for name, result in ctx.results.items()}
                report = compose_report(loaded.profile, results, summaries, ctx.deployed_artifact(), tuning)
            _publish(ctx, report, started)
            prune_cache(ctx)
            if report is not None:
                from edgetl.tracking import enabled, log_build

                if enabled(loaded.profile):
                    log.stage("tracking", f"logged: {log_build(loaded.profile, run_dir, report)}")
    except BaseException:
        if created is not None:
            _remove_empty_folders(created)
        raise
    finally:
        dist.shutdown()
    return BuildOutcome(run_dir, report, ctx.results, time.perf_counter() - started)


def check_run_dir(run_dir: Path, loaded: LoadedProfile) -> None:
    """Refuse an output folder edgetl must not write into, before anything is written (build and tune)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ProfileError(f"{loaded.path}: output_dir {run_dir} exists and is not a directory")
    # Refuse here what would otherwise fail as an OSError deep inside the build (exit 1, no hint).
    existing = nearest_existing(run_dir)
    if not existing.is_dir():
        raise ProfileError(f"{loaded.path}: output_dir {run_dir} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ProfileError(
            f"{loaded.path}: output_dir {run_dir}: {existing} is not writable", hint="choose another folder"
        )
    data_root = loaded.profile.data.root
    if data_root is not None and run_dir.is_relative_to(data_root.resolve()):
        raise ProfileError(
            f"{loaded.path}: output_dir {run_dir} is inside data.root {data_root}: reports and reference images "
            "would be scanned as training or val images",
            hint="choose a folder outside the dataset",
        )
    if run_dir.is_dir() and any(run_dir.iterdir()) and not is_run_dir(run_dir):
        raise ProfileError(
            f"{loaded.path}: output_dir {run_dir} is a non-empty folder that is not an edgetl run directory",
            hint="choose an empty or new folder so nothing of yours is overwritten",
        )
    linked = first_symlinked_folder(run_dir) if run_dir.is_dir() else None
    if linked is not None:
        raise ProfileError(
            f"{loaded.path}: output_dir {run_dir}: {linked.relative_to(run_dir)} is a symbolic link to "
            f"{os.path.realpath(linked)}; edgetl writes and deletes only inside its output folder",
            hint="remove the link (or choose another output_dir)",
        )


def is_run_dir(folder: Path) -> bool:
    """An edgetl run directory: its `.edgetl/` folder, or a manifest.json with edgetl's schema."""
    marker = folder / layout.STATE_DIR
    if marker.is_dir() and not marker.is_symlink():
        return True
    manifest = folder / layout.MANIFEST
    if not manifest.is_file() or manifest.is_symlink() or manifest.stat().st_size > 64 << 20:
        return False
    try:
        data = read_json(manifest)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("schema") == MANIFEST_SCHEMA


def _first_missing(run_dir: Path) -> Path | None:
    """The outermost folder of `run_dir` that this build will create (None if the run directory exists)."""
    missing = None
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_empty_folders(top: Path) -> None:
    """After a failed build: remove the folders it created if they hold no file.

    Bad input refused before any work (no data classes, a missing weights file) must not leave an
    empty run directory skeleton, e.g. `./runs/<name>/.edgetl`, behind. Anything with a file in it
    (a resumable training checkpoint, a finished stage's cache) is kept.
    """
    if not top.is_dir() or any(path.is_file() or path.is_symlink() for path in top.rglob("*")):
        return
    remove_tree(top)


def _published_files(ctx: BuildContext) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for result in ctx.results.values():
        for relative in result.files:
            files[relative] = result.path(relative)
    return files


def _publish(ctx: BuildContext, report: dict[str, Any] | None, started: float) -> None:
    run_dir = ctx.run_dir
    previous = _previous_files(run_dir)
    files = _published_files(ctx)
    for relative, source in files.items():
        publish_file(source, run_dir / relative)
    produced = set(files) | {layout.PROFILE_COPY}
    if report is not None:
        produced |= publish_report(run_dir, report)
    write_text_atomic(run_dir / layout.PROFILE_COPY, ctx.loaded.text)
    for stale in previous - produced:  # e.g. an int8 model a previous profile produced
        path = owned_path(run_dir, stale)
        if path is not None:  # a name that leaves the run directory is never followed
            remove_tree(path)
    known = {relative: digest for result in ctx.results.values() for relative, digest in result.files.items()}
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "edgetl_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 2),
        "profile": {
            "path": str(ctx.loaded.path),
            "sha256": ctx.loaded.sha256,
            "resolved": ctx.profile.model_dump(mode="json"),
        },
        "complete": report is not None,
        "stages_run": list(ctx.results),
        "target": ctx.profile.target,
        "deployed_artifact": ctx.deployed_artifact() if report is not None else None,
        "seed": ctx.profile.seed,
        "files": {
            relative: {
                # Stage outputs were hashed when written (or verified when reused): links to them need no rehash.
                "sha256": known.get(relative) or sha256_file(run_dir / relative),
                "bytes": (run_dir / relative).stat().st_size,
            }
            for relative in sorted(produced)
        },
        "stages": {
            name: {
                "fingerprint": result.fingerprint,
                "skipped": result.skipped,
                "seconds": round(result.seconds, 2),
                "summary": result.summary.to_dict(),
            }
            for name, result in ctx.results.items()
        },
        "packages": package_versions(
            "torch", "torchvision", "timm", "onnx", "onnxscript", "onnxruntime", "numpy", "pillow", "pydantic"
        ),
        "machine": describe_machine(),
        "determinism": DETERMINISM,
    }
    write_json_atomic(run_dir / layout.MANIFEST, manifest)


def _previous_files(run_dir: Path) -> set[str]:
    """The names the last build published (only edgetl's manifest, only names inside the run directory)."""
    if not is_run_dir(run_dir):
        return set()
    try:
        files = read_json(run_dir / layout.MANIFEST).get("files", {})
    except (OSError, ValueError, AttributeError, RecursionError):
        return set()
    if not isinstance(files, dict):
        return set()
    return {name for name in files if owned_path(run_dir, name) is not None}
