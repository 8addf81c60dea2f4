"""Stages with fingerprinted inputs, DVC style.

A stage declares what its result depends on (its profile section, the hashes of upstream
artefacts, package versions). The fingerprint of those inputs names a cache folder inside the run
directory; if that folder is complete, the stage is skipped. Outputs are written into a temporary
folder that is renamed into place only when the stage succeeds, so an interrupted stage leaves
nothing a later run could mistake for a result.
"""

from __future__ import annotations

import os
import platform
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgetl import __version__
from edgetl.console import Log
from edgetl.files import canonical_json, read_json, remove_tree, sha256_file, sha256_text, write_json_atomic
from edgetl.profile import LoadedProfile, Profile

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
    results: dict[str, StageResult] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)  # in-memory hand-offs between stages

    @property
    def profile(self) -> Profile:
        return self.loaded.profile

    @property
    def cache_root(self) -> Path:
        return self.run_dir / ".edgetl" / "cache"


class Stage(ABC):
    name: ClassVar[str]
    # Bump when a code change alters what the stage produces, to invalidate old caches.
    version: ClassVar[int] = 1

    @abstractmethod
    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        """Everything the outputs depend on, JSON-serializable."""

    @abstractmethod
    def run(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        """Write outputs under `out` and return a JSON-ready summary."""


def package_versions(*names: str) -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version(), "edgetl": __version__}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _complete(directory: Path) -> dict[str, Any] | None:
    record_path = directory / STAGE_RECORD
    if not record_path.is_file():
        return None
    try:
        record = read_json(record_path)
        for relative in record["files"]:
            if not (directory / relative).is_file():
                return None
    except (ValueError, KeyError, OSError):
        return None
    return record


def execute(stage: Stage, ctx: BuildContext) -> StageResult:
    payload = {"stage": stage.name, "stage_version": stage.version, "inputs": stage.fingerprint_inputs(ctx)}
    fingerprint = sha256_text(canonical_json(payload))
    folder = ctx.cache_root / stage.name / fingerprint[:16]
    record = None if ctx.force else _complete(folder)
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
        ctx.log.stage(stage.name, "up to date, skipped")
        ctx.results[stage.name] = result
        return result

    temp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    remove_tree(temp)
    temp.mkdir(parents=True)
    started = time.perf_counter()
    try:
        summary = stage.run(ctx, temp)
    except BaseException:
        remove_tree(temp)
        raise
    seconds = time.perf_counter() - started
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
    result = StageResult(stage.name, folder, fingerprint, files, summary, seconds, skipped=False)
    ctx.results[stage.name] = result
    return result


def prune_cache(ctx: BuildContext) -> None:
    """Keep only the cache folders the current build used (and nothing half-written)."""
    for stage_dir in ctx.cache_root.glob("*"):
        current = ctx.results.get(stage_dir.name)
        for entry in stage_dir.iterdir():
            if current is None or entry != current.directory:
                remove_tree(entry)
