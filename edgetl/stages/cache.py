"""Running a stage through its cache: the fingerprint names a folder, a complete folder skips the stage.

The fingerprint covers the stage's declared inputs and the digest of the edgetl code it can run (the
import closure of its module). Outputs are written into a temporary folder that is renamed into place
only when the stage succeeds, so an interrupted stage leaves nothing a later run could mistake for a
result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgetl.files import canonical_json, read_json, remove_tree, sha256_file, sha256_text, write_json_atomic
from edgetl.source import source_digest
from edgetl.stages.base import STAGE_RECORD, BuildContext, Stage, StageResult


def stage_code_digest(stage: Stage) -> str:
    """Digest of the edgetl source a stage runs: the import closure of its module (`edgetl.source`).

    Read from the imports, never from a list kept by hand: a change to any file the stage can reach
    (a backbone for export and convert, a converter for convert) invalidates its cache, and a file it
    cannot reach (the benchmark harness, for the fine-tune) does not.
    """
    return source_digest(type(stage).__module__)


def _complete(directory: Path, stage: Stage) -> dict[str, Any] | None:
    """The stage record if every output is there with the hash it was written with, else None (rerun).

    The record's summary is read back as the stage's summary type; one of another schema (an older
    edgetl) makes the stage run again.

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
        record["summary"] = stage.summary_type.from_dict(record["summary"])
    except (ValueError, KeyError, OSError, AttributeError):  # StaleSummary is a ValueError
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
    record = None if ctx.force and not must_be_cached else _complete(folder, stage)
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
        if not isinstance(summary, stage.summary_type):
            raise TypeError(f"stage {stage.name} returned {type(summary).__name__}, not {stage.summary_type.__name__}")
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
        {
            "fingerprint": fingerprint,
            "inputs": payload,
            "files": files,
            "summary": summary.to_dict(),
            "seconds": seconds,
        },
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
