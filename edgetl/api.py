"""The Python API: build, tune and load from a notebook or a script. The CLI is a thin layer over it.

    import edgetl

    run = edgetl.build("profiles/quickstart.yaml")                 # or a dict, or an edgetl.Profile
    run = edgetl.build("profiles/quickstart.yaml", finetune={"epochs": 3}, target="raspberry-pi-5")
    print(run.deployed.name, run.deployed.accuracy, run.deployed.latency_ms)
    predictor = run.load()                                          # the shipped artefact, no torch needed
    predictor.predict(["bee.jpg"], top_k=2)

`import edgetl` imports no torch; a build imports it when it starts. Results are the run directory's
report, read back as typed records: what the CLI prints is what these hold.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import yaml

from edgetl import layout
from edgetl.console import Log
from edgetl.errors import BudgetExceeded, ModelFileError, UserInputError
from edgetl.files import read_json
from edgetl.profile import LoadedProfile, Profile, deep_merge, load_profile, loaded_from_mapping, plain_profile_data

if TYPE_CHECKING:
    from edgetl.runtime import Predictor
    from edgetl.tuning.progress import TrialEvent

__all__ = [
    "Artifact",
    "Budget",
    "Progress",
    "ProfileSource",
    "Run",
    "TuneResult",
    "build",
    "load_run",
    "resolve_profile",
    "tune",
]

ProfileSource: TypeAlias = Profile | str | os.PathLike[str] | Mapping[str, Any] | LoadedProfile
"""A profile file's path, a mapping of profile fields (as the YAML would hold), or an `edgetl.Profile`."""


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """One measured artefact of a build (a row of the report's table), on the val split."""

    name: str
    """The artefact's name, e.g. `onnx_int8`, `torch_fp32` (the report's rows)."""
    file: Path
    """Absolute path of the model file in the run directory."""
    format: str
    """`onnx`, `pytorch`, `openvino`, `tflite`, `pte` or `tensorrt`."""
    precision: str
    """`fp32`, `fp16` or `int8`."""
    runtime: str
    """What ran it, e.g. "ONNX Runtime CPU"."""
    size_bytes: int
    """The model file's size."""
    accuracy: float
    """Top-1 on val, 0..1."""
    correct: int
    """Val images it classified right."""
    total: int
    """Val images."""
    latency_ms: float | None
    """The p50 latency at batch 1, measured on the build machine (None: not timed here)."""
    images_per_second: float | None
    """Throughput at the benchmark's batch size."""
    accuracy_drop_points: float | None
    """Baseline accuracy minus this one, in percentage points."""
    speedup: float | None
    """The baseline's p50 latency / this one's."""
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    """The report's whole record."""

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6


@dataclass(frozen=True)
class Budget:
    """One budget from the profile, checked against the deployed artefact's measurements."""

    name: str
    """The budget's field in the profile, e.g. `max_accuracy_drop`."""
    artifact: str
    """The artefact it was checked on (the deployed one)."""
    limit: float
    """The profile's value."""
    measured: float | None
    """What was measured, in `unit`."""
    unit: str
    """`points`, `%`, `ms`, `MB` or `x` (a ratio)."""
    passed: bool
    """Whether the limit holds."""
    message: str
    """One line saying all of the above, as the CLI prints it."""


@dataclass(frozen=True)
class Run:
    """A finished build: where it is, what ships, what was measured and whether the budgets hold."""

    run_dir: Path
    """The run directory (absolute)."""
    deployed: Artifact
    """The artefact the bundle ships."""
    baseline: Artifact
    """What accuracy drops and speedups are measured against (PyTorch fp32 by default)."""
    artifacts: Mapping[str, Artifact]
    """Every measured artefact by name."""
    budgets: tuple[Budget, ...]
    """The profile's budgets, checked on the deployed artefact."""
    passed: bool
    """Every budget holds."""
    target: str
    """Where the model runs (the profile's target)."""
    seconds: float | None
    """Wall clock of the build that wrote it (None when read back from disk)."""
    reused_stages: tuple[str, ...]
    """Stages whose cached results were up to date (not rerun)."""
    report: Mapping[str, Any] = field(repr=False, compare=False)
    """The whole report.json."""

    @property
    def report_md(self) -> Path:
        return self.run_dir / layout.REPORT_MD

    @property
    def report_html(self) -> Path:
        return self.run_dir / layout.REPORT_HTML

    @property
    def bundle(self) -> Path | None:
        """The device bundle folder (None for a run that made none)."""
        folder = self.run_dir / layout.BUNDLE_DIR
        return folder if (folder / layout.BUNDLE_INFO).is_file() else None

    @property
    def profile_path(self) -> Path:
        """The profile exactly as it ran: edit it and build it again."""
        return self.run_dir / layout.PROFILE_COPY

    @property
    def failed_budgets(self) -> tuple[Budget, ...]:
        return tuple(budget for budget in self.budgets if not budget.passed)

    def raise_for_budgets(self) -> None:
        """`edgetl.BudgetExceeded` naming every violated budget (what `edgetl build` exits 3 with)."""
        if self.failed_budgets:
            raise BudgetExceeded(
                "budget violated: " + "; ".join(b.message for b in self.failed_budgets),
                hint=f"report: {self.report_md}",
            )

    def __fspath__(self) -> str:
        """A run is its run directory: `edgetl.load(run)`, `Path(run)` and `open(Path(run) / ...)` work."""
        return str(self.run_dir)

    def load(self, artifact: str | None = None, threads: int | None = None) -> Predictor:
        """A torch-free predictor for the deployed artefact (or `artifact`), checked against the manifest."""
        from edgetl.runtime import load

        return load(self.run_dir, artifact=artifact, threads=threads)


@dataclass(frozen=True)
class TuneResult:
    """A finished (or interrupted) `tune`: the study's outputs and, when built, the pick evaluated on val."""

    tune_dir: Path
    """Pareto.md, trials.csv, best.yaml, ..."""
    study: str
    pick: Mapping[str, Any] | None
    """Trial, params, accuracy (tune holdout), latency_ms, size_mb."""
    counts: Mapping[str, int]
    """Complete, pruned, fail."""
    final: Run | None
    """The pick built on all of train, evaluated on val once."""
    interrupted: bool
    summary: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Progress:
    """One progress event, for `on_progress`: a stage line, a message or a warning."""

    kind: Literal["stage", "message", "warning"]
    """A stage's line, a message of the build, or a warning."""
    message: str
    """The line, as the console shows it."""
    stage: str | None = None
    """The stage it comes from (stage lines only)."""


# -- entry points ----------------------------------------------------------------------------------


def resolve_profile(profile: ProfileSource, **overrides: Any) -> LoadedProfile:
    """Validate a profile source, with `overrides` laid over it section by section.

    `overrides` are top-level profile fields: `finetune={"epochs": 3}` changes one field of
    `finetune` and keeps the others; `target="raspberry-pi-5"` replaces the target. Relative paths
    resolve against the profile file's folder, or the working directory for a mapping or a Profile.
    Bad input raises `edgetl.ProfileError` naming the field.
    """
    if isinstance(profile, str | os.PathLike):
        profile = load_profile(Path(profile))
    if isinstance(profile, LoadedProfile):
        if not overrides:
            return profile
        data: Mapping[str, Any] = yaml.safe_load(profile.text)
        source = profile.path.with_name(f"{profile.path.name} (with overrides)")  # same folder: same relative paths
    elif isinstance(profile, Profile):
        data = profile.model_dump(mode="json", exclude_unset=True)
        source = Path.cwd() / f"(edgetl.Profile {profile.name})"
    elif isinstance(profile, Mapping):
        data, source = profile, Path.cwd() / "(profile mapping)"
    else:
        raise UserInputError(f"profile: expected a path, a mapping or an edgetl.Profile, got {type(profile).__name__}")
    header = "# Built through edgetl's Python API; edit it and `edgetl build` this file.\n"
    return loaded_from_mapping(deep_merge(dict(data), plain_profile_data(overrides)), source, header)


def build(
    profile: ProfileSource,
    *,
    output_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    resume: bool = False,
    quiet: bool = False,
    progress_bars: bool | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    check_budgets: bool = False,
    **overrides: Any,
) -> Run:
    """Fine-tune, export, optimize and benchmark as `profile` says; return the measured run.

    Args:
        profile: a profile file, a mapping of profile fields, or an `edgetl.Profile`.
        output_dir: the run directory, relative to the working directory (default: the profile's output_dir,
            else `./runs/<name>`).
        force: rerun every stage instead of reusing cached results.
        resume: continue an interrupted fine-tune from its last finished epoch.
        quiet: print nothing but warnings (progress still reaches `on_progress`).
        progress_bars: per-batch bars (tqdm; notebook widgets in Jupyter). Default: on in a terminal or notebook.
        on_progress: called with every stage line, message and warning.
        check_budgets: raise `edgetl.BudgetExceeded` when a budget is violated (the CLI's exit 3).
            Off by default: the returned run says `passed` and which budgets failed.
        **overrides: top-level profile fields laid over the profile, e.g. `finetune={"epochs": 3}`.

    Raises `edgetl.EdgeTLError` subclasses for bad input (ProfileError, DataError) and failed checks.
    Multi-process training under torchrun goes through the CLI (`edgetl train`/`edgetl build`).
    """
    run = build_run(
        resolve_profile(profile, **overrides),
        output_dir=output_dir,
        force=force,
        resume=resume,
        log=_log(quiet, progress_bars, on_progress),
    )
    if run is None:
        raise UserInputError("this process is not rank 0 of a torchrun build; rank 0 holds the results")
    if check_budgets:
        run.raise_for_budgets()
    return run


def build_run(
    loaded: LoadedProfile,
    *,
    output_dir: str | os.PathLike[str] | None,
    force: bool,
    resume: bool,
    log: Log,
) -> Run | None:
    """`build` for the CLI: a Log of its own, and None on torchrun ranks other than 0 (rank 0 reports)."""
    from edgetl.pipeline import build as run_pipeline

    outcome = run_pipeline(
        loaded, output_dir=None if output_dir is None else Path(output_dir), force=force, resume=resume, log=log
    )
    if outcome.report is None:
        return None
    reused = tuple(name for name, result in outcome.results.items() if result.skipped)
    return run_from_report(outcome.run_dir, outcome.report, outcome.seconds, reused)


def tune(
    profile: ProfileSource,
    *,
    trials: int | None = None,
    time_budget: str | None = None,
    storage: str | None = None,
    study: str | None = None,
    resume: bool = False,
    final_build: bool | None = None,
    heartbeat: float = 30.0,
    quiet: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    on_trial: Callable[[TrialEvent], None] | None = None,
    **overrides: Any,
) -> TuneResult:
    """Search for the most accurate model that fits the budgets (`edgetl tune`); the profile needs a `tune` section.

    Trials are scored on a holdout carved out of train; val is used once, by the final build of the pick.
    `on_trial` is called with an `edgetl.TrialEvent` after every finished trial (its settings, measurements,
    the study's progress and the best so far). `storage` is an Optuna RDB URL (default: SQLite
    in the run directory's tune/), shared by workers that run the same study; a worker silent for twice
    `heartbeat` seconds has its running trial marked failed.
    """
    if not math.isfinite(heartbeat) or not 1 <= heartbeat <= 86_400:
        raise UserInputError(f"heartbeat (--heartbeat) {heartbeat}: expected seconds between 1 and 86400")
    from edgetl.tuning import TuneOptions, run_tune

    loaded = resolve_profile(profile, **overrides)
    options = TuneOptions(
        trials=trials,
        time_budget=time_budget,
        storage=storage,
        study=study,
        resume=resume,
        final_build=final_build,
        heartbeat=heartbeat,
        progress=on_trial,
    )
    outcome = run_tune(loaded, options, _log(quiet, None, on_progress))
    summary = outcome.summary
    final = outcome.final
    return TuneResult(
        tune_dir=outcome.tune_dir,
        study=outcome.study_name,
        pick=summary.get("pick"),
        counts=summary.get("counts", {}),
        final=None
        if final is None or final.report is None
        else run_from_report(final.run_dir, final.report, final.seconds),
        interrupted=outcome.interrupted,
        summary=summary,
    )


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Read a finished run directory back as a `Run` (its report.json), without building anything."""
    folder = Path(run_dir)
    path = folder / layout.REPORT_JSON
    if not path.is_file():
        raise ModelFileError(f"{folder}: no {layout.REPORT_JSON}; not a finished edgetl build")
    try:
        report = read_json(path)
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{path}: not readable JSON ({error})") from None
    try:
        return run_from_report(folder.resolve(), report, seconds=None)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ModelFileError(f"{path}: not an edgetl report ({error.__class__.__name__}: {error})") from None


# -- report -> records -----------------------------------------------------------------------------


def run_from_report(
    run_dir: Path, report: Mapping[str, Any], seconds: float | None, reused_stages: tuple[str, ...] = ()
) -> Run:
    """The typed view of a report.json (the one source of what the CLI prints)."""
    baseline = report["baseline"]
    artifacts = {name: _artifact(name, record, run_dir, baseline) for name, record in report["artifacts"].items()}
    budgets = tuple(
        Budget(
            name=b["name"],
            artifact=b.get("artifact", report["deployed_artifact"]),
            limit=float(b["limit"]),
            measured=None if b.get("measured") is None else float(b["measured"]),
            unit=b.get("unit", ""),
            passed=bool(b["passed"]),
            message=b["message"],
        )
        for b in report["budgets"]
    )
    return Run(
        run_dir=run_dir,
        deployed=artifacts[report["deployed_artifact"]],
        baseline=artifacts[baseline],
        artifacts=artifacts,
        budgets=budgets,
        passed=bool(report["passed"]),
        target=report["target"],
        seconds=seconds,
        reused_stages=reused_stages,
        report=report,
    )


def _artifact(name: str, record: Mapping[str, Any], run_dir: Path, baseline: str) -> Artifact:
    latency = record.get("latency_ms") or {}
    throughput = record.get("throughput") or {}
    speedup = (record.get("speedup_vs") or {}).get(baseline)
    drop = record.get("accuracy_delta_points")
    return Artifact(
        name=name,
        file=run_dir / record["file"],
        format=record.get("format", ""),
        precision=record.get("precision", ""),
        runtime=record.get("runtime", ""),
        size_bytes=int(record["size_bytes"]),
        accuracy=float(record["accuracy"]),
        correct=int(record["correct"]),
        total=int(record["total"]),
        latency_ms=latency.get("p50"),
        images_per_second=throughput.get("images_per_second"),
        accuracy_drop_points=None if drop is None else float(drop),
        speedup=None if speedup is None else float(speedup),
        raw=record,
    )


# -- progress --------------------------------------------------------------------------------------


_logger = logging.getLogger("edgetl")
_logger.addHandler(logging.NullHandler())  # the console shows progress already; handlers are the application's


class _ApiLog(Log):
    """The CLI's log, plus the `edgetl` logger, a callback for every line and notebook-aware progress bars."""

    def __init__(self, quiet: bool, bars: bool, on_progress: Callable[[Progress], None] | None) -> None:
        super().__init__(quiet=quiet)
        self._bars = bars
        self._on_progress = on_progress

    def __call__(self, message: str) -> None:
        super().__call__(message)
        _logger.info(message)
        if self._on_progress is not None:
            self._on_progress(Progress("message", message))

    def stage(self, name: str, message: str) -> None:
        super().stage(name, message)
        _logger.info("%s: %s", name, message)
        if self._on_progress is not None:
            self._on_progress(Progress("stage", message, stage=name))

    def warn(self, message: str) -> None:
        super().warn(message)
        _logger.warning(message)
        if self._on_progress is not None:
            self._on_progress(Progress("warning", message))

    @property
    def progress_enabled(self) -> bool:
        return self._bars and not self.quiet


def _log(quiet: bool, bars: bool | None, on_progress: Callable[[Progress], None] | None) -> Log:
    if bars is None:
        bars = sys.stderr.isatty() or _in_notebook()
    return _ApiLog(quiet, bars, on_progress)


def _in_notebook() -> bool:
    """A Jupyter kernel (tqdm.auto then draws widget bars); False when IPython is not even loaded."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ipython = shell.get_ipython()
    except Exception:  # noqa: BLE001 - an odd IPython is just not a notebook
        return False
    return ipython is not None and type(ipython).__name__ == "ZMQInteractiveShell"
