"""What a stage is: its name, the inputs it fingerprints, and a `run` that writes its outputs (DVC style).

A stage declares what its result depends on (its profile section, the hashes of upstream
artefacts, package versions); `edgetl.stages.cache` turns that, and the code the stage can run, into
the cache folder that holds its result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from edgetl import layout
from edgetl.console import Log
from edgetl.plan import build_plan
from edgetl.profile import LoadedProfile, Profile
from edgetl.summaries import BenchmarkSummary, Summary, as_kind
from edgetl.training.distributed import DistributedEnv

SummaryT = TypeVar("SummaryT", bound=Summary)

STAGE_RECORD = "stage.json"


@dataclass
class StageResult:
    name: str
    directory: Path
    fingerprint: str
    files: dict[str, str]  # relative path -> sha256
    summary: Summary
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

    def summary(self, stage: str, kind: type[SummaryT]) -> SummaryT:
        """The summary stage `stage` returned in this build, as its type."""
        return as_kind(stage, self.results[stage].summary, kind)

    def deployed_artifact(self) -> str:
        """What this build ships: the benchmark stage's decision (the profile's default before it ran)."""
        if "benchmark" in self.results:
            return self.summary("benchmark", BenchmarkSummary).deployed or build_plan(self.profile).deployed_artifact
        return build_plan(self.profile).deployed_artifact

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
    # What `run` returns (edgetl.summaries): the cache stores it with its schema and reads it back as this type.
    summary_type: ClassVar[type[Summary]]

    @abstractmethod
    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        """Everything the outputs depend on, JSON-serializable."""

    @abstractmethod
    def run(self, ctx: BuildContext, out: Path) -> Summary:
        """Write outputs under `out` and return what later stages and the report read of this run."""
