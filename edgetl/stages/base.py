"""Stages with fingerprinted inputs, DVC style.

A stage declares what its result depends on (its profile section, the hashes of upstream
artefacts, package versions). The fingerprint of those inputs names a cache folder inside the run
directory; if that folder is complete, the stage is skipped. Outputs are written into a temporary
folder that is renamed into place only when the stage succeeds, so an interrupted stage leaves
nothing a later run could mistake for a result.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgetl import layout
from edgetl.console import Log
from edgetl.files import canonical_json, read_json, remove_tree, sha256_file, sha256_text, write_json_atomic
from edgetl.profile import LoadedProfile, Profile
from edgetl.source import source_digest
from edgetl.training.distributed import DistributedEnv

STAGE_RECORD = "stage.json"


@dataclass
class StageResult:
    name: str
    directory: Path
    fingerprint: str
    files: dict[str, str]  # relative path -> sha256
    summary: dict[str, Any]
    seconds: float
    skipped: bool

    def path(self, relative: str) -> Path:
        return self.directory / relative

    def has(self, relative: str) -> bool:
        return relative in self.files


@dataclass
class BuildContext:
    loaded: LoadedProfile
    run_dir: Path
    log: Log
    force: bool = False
    resume: bool = False  # continue an interrupted stage from its last checkpoint
    dist: DistributedEnv = field(default_factory=DistributedEnv)
    results: dict[str, StageResult] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)  # in-memory hand-offs between stages
    work_dir: Path | None = None  # the running stage's folder for resumable state (kept on failure)
    # A stage cache shared with other builds (`edgetl tune`'s trials): locked per entry, never pruned by a build.
    shared_cache: Path | None = None
    # Called after every fine-tuning epoch with its EpochRecord (`edgetl tune` prunes weak trials here).
    on_epoch_end: Callable[[Any], None] | None = None

    @property
    def profile(self) -> Profile:
        return self.loaded.profile

    def deployed_artifact(self) -> str:
        """What this build ships: the benchmark stage's decision (the profile's default before it ran)."""
        if "benchmark" in self.results:
            return str(self.results["benchmark"].summary.get("deployed") or self.profile.deployed_artifact)
        return self.profile.deployed_artifact

    def artifact_path(self, name: str) -> Path:
        """Where artefact `name` lies in the cache folder of the stage that wrote it (this build)."""
        from edgetl.backends import artifact

        item = artifact(name)
        return self.results[item.stage].path(item.file)

    def artifact_digest(self, name: str) -> str | None:
        """The sha256 of artefact `name` as its stage recorded it (for the fingerprints of later stages)."""
        from edgetl.backends import artifact

        item = artifact(name)
        return self.results[item.stage].files.get(item.file)

    @property
    def cache_root(self) -> Path:
        return self.shared_cache or self.run_dir / layout.STATE_DIR / "cache"

    @property
    def work_root(self) -> Path:
        return self.run_dir / layout.STATE_DIR / "work"


class Stage(ABC):
    name: ClassVar[str]
    # Bump when a code change alters what the stage produces, to invalidate old caches.
    version: ClassVar[int] = 1
    # Runs on every torchrun rank (the others only wait for rank 0 and read its cached result).
    distributed: ClassVar[bool] = False

    @abstractmethod
    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        """Everything the outputs depend on, JSON-serializable."""

    @abstractmethod
    def run(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        """Write outputs under `out` and return a JSON-ready summary."""


def stage_code_digest(stage: Stage) -> str:
    """Digest of the edgetl source a stage runs: the import closure of its module (`edgetl.source`).

    Read from the imports, never from a list kept by hand: a change to any file the stage can reach
    (a backbone for export and convert, a converter for convert) invalidates its cache, and a file it
    cannot reach (the benchmark harness, for the fine-tune) does not.
    """
    return source_digest(type(stage).__module__)


def _complete(directory: Path) -> dict[str, Any] | None:
    """The stage record if every output is there with the hash it was written with, else None (rerun).

    Published files are hard links to these, so a model edited in place in the run directory
    changes the cached copy too; checking the hashes makes the stage run again instead of
    republishing the edited file as if it were the build's.
    """
    record_path = directory / STAGE_RECORD
    if not record_path.is_file():
        return None
    try:
        record = read_json(record_path)
        for relative, digest in record["files"].items():
            path = directory / relative
            if not path.is_file() or sha256_file(path) != digest:
                return None
    except (ValueError, KeyError, OSError, AttributeError):
        return None
    return record


def execute(stage: Stage, ctx: BuildContext) -> StageResult:
    """Run `stage` unless its cache folder for these inputs is complete.

    Under torchrun, non-distributed stages run on rank 0 only (the others wait, then read the
    cache); distributed stages run on every rank but only rank 0 keeps the outputs.
    """
    if ctx.dist.enabled and not stage.distributed:
        if ctx.dist.is_main:
            _execute(stage, ctx)
        ctx.dist.barrier()
        if not ctx.dist.is_main:
            return _execute(stage, ctx, must_be_cached=True)
        return ctx.results[stage.name]
    return _execute(stage, ctx)


@contextmanager
def _entry_lock(ctx: BuildContext, folder: Path) -> Iterator[None]:
    """In a shared cache, one process at a time computes (or checks) an entry; the others then reuse it."""
    if ctx.shared_cache is None:
        yield
        return
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f".{folder.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _execute(stage: Stage, ctx: BuildContext, must_be_cached: bool = False) -> StageResult:
    payload = {
        "stage": stage.name,
        "stage_version": stage.version,
        "code": stage_code_digest(stage),
        "inputs": stage.fingerprint_inputs(ctx),
    }
    fingerprint = sha256_text(canonical_json(payload))
    folder = ctx.cache_root / stage.name / fingerprint[:16]
    with _entry_lock(ctx, folder):
        return _execute_unlocked(stage, ctx, payload, fingerprint, folder, must_be_cached)


def _execute_unlocked(
    stage: Stage, ctx: BuildContext, payload: dict[str, Any], fingerprint: str, folder: Path, must_be_cached: bool
) -> StageResult:
    record = None if ctx.force and not must_be_cached else _complete(folder)
    if record is not None:
        result = StageResult(
            name=stage.name,
            directory=folder,
            fingerprint=fingerprint,
            files=record["files"],
            summary=record["summary"],
            seconds=record.get("seconds", 0.0),
            skipped=True,
        )
        if ctx.dist.is_main:
            ctx.log.stage(stage.name, "up to date, skipped")
        ctx.results[stage.name] = result
        return result
    if must_be_cached:
        raise RuntimeError(f"rank {ctx.dist.rank}: stage {stage.name} was not completed by rank 0")

    ctx.work_dir = ctx.work_root / stage.name / fingerprint[:16]
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"tmp-{os.getpid()}" if ctx.dist.is_main else f"rank{ctx.dist.rank}-{os.getpid()}"
    temp = folder.with_name(f".{folder.name}.{suffix}")
    remove_tree(temp)
    temp.mkdir(parents=True)
    started = time.perf_counter()
    try:
        summary = stage.run(ctx, temp)
    except BaseException:
        remove_tree(temp)
        raise
    finally:
        ctx.work_dir = None
    seconds = time.perf_counter() - started
    if not ctx.dist.is_main:  # other ranks trained alongside rank 0; its outputs are the ones kept
        remove_tree(temp)
        result = StageResult(stage.name, folder, fingerprint, {}, summary, seconds, skipped=False)
        ctx.results[stage.name] = result
        return result
    files = {
        path.relative_to(temp).as_posix(): sha256_file(path)
        for path in sorted(temp.rglob("*"))
        if path.is_file() and path.name != STAGE_RECORD
    }
    write_json_atomic(
        temp / STAGE_RECORD,
        {"fingerprint": fingerprint, "inputs": payload, "files": files, "summary": summary, "seconds": seconds},
    )
    remove_tree(folder)
    os.replace(temp, folder)
    remove_tree(ctx.work_root / stage.name / fingerprint[:16])  # resumable state is no longer needed
    result = StageResult(stage.name, folder, fingerprint, files, summary, seconds, skipped=False)
    ctx.results[stage.name] = result
    return result


def prune_cache(ctx: BuildContext) -> None:
    """Keep only the cache folders the current build used (and nothing half-written or stale).

    A shared cache belongs to whoever shares it (`edgetl tune`): other builds' entries stay.
    """
    if ctx.shared_cache is not None:
        remove_tree(ctx.work_root)
        return
    for stage_dir in ctx.cache_root.glob("*"):
        if stage_dir.is_symlink() or not stage_dir.is_dir():  # never follow a link out of the cache
            continue
        current = ctx.results.get(stage_dir.name)
        for entry in stage_dir.iterdir():
            if current is None or entry != current.directory:
                remove_tree(entry)
    remove_tree(ctx.work_root)
