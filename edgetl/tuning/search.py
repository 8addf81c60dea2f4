"""`edgetl tune`: trials are ordinary builds of sampled profiles, scored on a tune holdout, never on val.

Each trial is the base profile with the sampled fields laid over it and `data.tune_holdout` set:
a stratified share of train becomes the trial's evaluation set, and val is not used at all. The
trial builds into `tune/trials/NNNN` with one stage cache shared by every trial of this worker
(the data stage runs once; a trial that repeats another's training reuses it), and its report
gives the objectives: the deployed artefact's accuracy, its measured p50 latency and its file
size, with the profile's budgets as constraints. The first trial takes the profile's own values (where they
lie in the space), so the search starts from what the user would have built.

When the search ends (trial count, time budget, or Ctrl-C), `tune/` gets every trial (CSV +
JSON), the Pareto front (PNG + Markdown), a complete profile per front point and `best.yaml`; then
the pick is rebuilt on the whole train split into the run directory and evaluated on val once.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgetl import layout
from edgetl.console import Log
from edgetl.errors import EdgeTLError, ProfileError, UserInputError
from edgetl.files import folders_kept_on_success, write_text_atomic
from edgetl.plan import build_plan
from edgetl.profile import LoadedProfile, Profile, deep_merge, load_profile, parse_duration
from edgetl.tuning.progress import TrialEvent, trial_event
from edgetl.tuning.pruning import COST_ATTR, CheaperTrialsPruner
from edgetl.tuning.results import TUNE_DIR
from edgetl.tuning.space import SearchSpace
from edgetl.tuning.study import HEARTBEAT_SECONDS, make_sampler, open_storage, open_study, storage_url

OBJECTIVE_DIRECTIONS = {"accuracy": "maximize", "latency": "minimize", "size": "minimize"}


def _drop_trial_failed_traceback(record: logging.LogRecord) -> bool:
    """A trial that failed for a reason edgetl stated (budgets, a refused profile) is one line, not a traceback."""
    if record.exc_info and isinstance(record.exc_info[1], TrialFailed):
        record.exc_info = None
        record.exc_text = None
    return True


def _one_line_trial_failures() -> None:
    optimize_logger = logging.getLogger("optuna.study._optimize")  # logs a caught trial error with its traceback
    if _drop_trial_failed_traceback not in optimize_logger.filters:
        optimize_logger.addFilter(_drop_trial_failed_traceback)


class TrialFailed(EdgeTLError):
    """One trial cannot be built (its sampled profile is refused, a stage fails): the study goes on."""


@dataclass
class TuneOptions:
    trials: int | None = None  # total for the study; default: the profile's tune.trials
    time_budget: str | None = None  # this worker's wall clock; default: tune.time_budget
    storage: str | None = None
    study: str | None = None
    resume: bool = False
    final_build: bool | None = None
    heartbeat: float = HEARTBEAT_SECONDS
    progress: Callable[[TrialEvent], None] | None = None  # called after every finished trial


@dataclass
class TuneOutcome:
    tune_dir: Path
    study_name: str
    summary: dict[str, Any]
    final: Any = None  # the final BuildOutcome, when built
    interrupted: bool = False


def tune_dir_of(loaded: LoadedProfile) -> Path:
    return loaded.output_dir / TUNE_DIR


def latency_source(profile: Profile) -> str:
    """Measured here when the target is this kind of machine; otherwise a labelled estimate."""
    from edgetl.targets import get_target

    target = get_target(profile.target)
    if target.x86_cpu and platform.machine().lower() in ("x86_64", "amd64"):
        return f"measured on this machine (target {target.name}), p50 at {profile.benchmark.threads} thread(s)"
    return (
        f"ESTIMATE: measured on this machine's CPU, not on the target {target.name}; it ranks candidates, "
        "re-measure the pick on the device (edgetl bench BUNDLE)"
    )


def base_profile_dict(loaded: LoadedProfile) -> dict[str, Any]:
    """The resolved profile as a complete mapping (every default written out, absolute paths)."""
    data = loaded.profile.model_dump(mode="json", exclude={"tune"})
    data["tracking"] = {}  # the tuner logs trials itself; trial builds do not log twice
    return data


def trial_benchmark(profile: Profile) -> dict[str, Any]:
    """What a trial measures: the deployed artefact and the fp32 ONNX model, no memory or GEMM-peak runs."""
    bench: dict[str, Any] = {"memory": False, "compute_peak": False, "batch_sizes": [1]}
    if build_plan(profile).deploy_mode != "fastest":
        artifacts = list(dict.fromkeys([build_plan(profile).deployed_artifact, "onnx_fp32"]))
        bench["artifacts"] = artifacts
        if profile.benchmark.baseline not in artifacts:
            bench["baseline"] = "onnx_fp32"
    return bench


def trial_profile(base: dict[str, Any], overrides: dict[str, Any], output_dir: Path, holdout: float) -> dict[str, Any]:
    profile = deep_merge(base, overrides)
    profile["output_dir"] = str(output_dir)
    profile["data"] = {**profile["data"], "tune_holdout": holdout}
    return profile


def write_profile(path: Path, data: dict[str, Any], header: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {line}\n" for line in header.splitlines()) + yaml.safe_dump(data, sort_keys=False)
    write_text_atomic(path, text)
    return path


def objective_values(report: dict[str, Any], objectives: list[str]) -> tuple[list[float], dict[str, Any]]:
    """The deployed artefact's measurements from a trial's report, and the objective vector."""
    deployed = report["deployed_artifact"]
    entry = report["artifacts"][deployed]
    measured = {
        "artifact": deployed,
        "accuracy": float(entry["accuracy"]),
        "correct": int(entry["correct"]),
        "images": int(entry["total"]),
        "latency_ms": float(entry["latency_ms"]["p50"]),
        "latency_p90_ms": float(entry["latency_ms"]["p90"]),
        "size_mb": round(entry["size_bytes"] / 1e6, 4),
        "budgets_failed": [b["message"] for b in report["budgets"] if not b["passed"]],
    }
    values = {"accuracy": measured["accuracy"], "latency": measured["latency_ms"], "size": measured["size_mb"]}
    return [values[name] for name in objectives], measured


class Search:
    """One worker's part of a study: sample, build, measure, record."""

    def __init__(self, loaded: LoadedProfile, options: TuneOptions, log: Log) -> None:
        profile = loaded.profile
        if profile.tune is None:
            raise ProfileError(
                f"{loaded.path}: no tune section; add one (an empty `tune: {{}}` searches edgetl's default space)",
                hint="profiles/quickstart-tune.yaml is an example",
            )
        self.loaded = loaded
        self.options = options
        self.log = log
        self.cfg = profile.tune
        self.space = SearchSpace.from_config(self.cfg, str(loaded.path))
        self.tune_dir = tune_dir_of(loaded)
        self.total = options.trials if options.trials is not None else self.cfg.trials
        budget = options.time_budget or self.cfg.time_budget
        try:
            self.deadline = time.monotonic() + parse_duration(budget) if budget else None
        except ValueError as error:
            raise UserInputError(f"--time-budget: {error}") from None
        self.study_name = options.study or profile.name
        self.url = storage_url(options.storage, self.tune_dir)
        self.base = base_profile_dict(loaded)
        self.space.check_values(self.base, str(loaded.path))
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    # -- the study -------------------------------------------------------------------------------

    def signature(self) -> dict[str, Any]:
        """What must match for a worker to join (or resume) the study."""
        return {
            "objectives": list(self.cfg.objectives),
            "space": self.space.describe(),
            "holdout_fraction": self.cfg.holdout_fraction,
            # What the user wrote, not every default: a newer edgetl with one more profile field can resume the study.
            "base_profile": self.loaded.profile.model_dump(
                mode="json", exclude_defaults=True, exclude={"tune", "tracking", "output_dir"}
            ),
        }

    def open(self) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # edgetl reports trials itself
        _one_line_trial_failures()
        # The run directory is marked as edgetl's before anything else is written into it: a second worker
        # starting now finds a run directory, not "a non-empty folder of someone else's". A refused storage
        # leaves neither the marker nor an empty tune/ behind.
        marker = self.loaded.output_dir / layout.STATE_DIR
        with folders_kept_on_success(marker), folders_kept_on_success(self.tune_dir):
            storage = open_storage(self.url, self.options.heartbeat)
            sampler = make_sampler(self.cfg.sampler, self.loaded.profile.seed, self.cfg.startup_trials)
            directions = [OBJECTIVE_DIRECTIONS[name] for name in self.cfg.objectives]
            where = str(self.loaded.path)
            study = open_study(
                storage, self.study_name, directions, sampler, self.options.resume, self.signature(), where
            )
        if not study.trials:
            first = self.space.profile_values(self.loaded.profile)
            origin = "the profile's own values where they lie in the space"
            study.enqueue_trial(first, user_attrs={"origin": origin}, skip_if_exists=True)
        return study

    def run(self, study: Any) -> bool:
        """Run trials until the study has `total` finished ones or the time is up; True if interrupted."""
        import optuna

        counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        callbacks = [optuna.study.MaxTrialsCallback(self.total, states=counted), self._after_trial]
        timeout = None
        if self.deadline is not None:
            timeout = max(0.0, self.deadline - time.monotonic())
        if len(study.get_trials(deepcopy=False, states=counted)) >= self.total or timeout == 0.0:
            return False
        try:
            study.optimize(
                lambda trial: self.objective(study, trial),
                timeout=timeout,
                callbacks=callbacks,
                catch=(TrialFailed,),
                gc_after_trial=True,
            )
        except KeyboardInterrupt:
            return True
        return False

    def _after_trial(self, study: Any, trial: Any) -> None:
        if self.options.progress is not None:
            self.options.progress(trial_event(study, trial, self.total))

    # -- one trial -------------------------------------------------------------------------------

    def objective(self, study: Any, trial: Any) -> list[float]:
        from edgetl.backbones.registry import get_backbone
        from edgetl.pipeline import build

        started = time.perf_counter()
        values = self.space.sample(trial)
        trial_dir = self.tune_dir / "trials" / f"{trial.number:04d}"
        data = trial_profile(self.base, self.space.overrides(values), trial_dir, self.cfg.holdout_fraction)
        data["benchmark"] = {**data["benchmark"], **trial_benchmark(self.loaded.profile)}
        path = write_profile(
            self.tune_dir / "profiles" / f"trial-{trial.number:04d}.yaml",
            data,
            f"edgetl tune, study {self.study_name}, trial {trial.number}: {values}\n"
            "Scored on a tune holdout (data.tune_holdout); `edgetl build` of this file reproduces the trial.",
        )
        trial.set_user_attr("profile", str(path.relative_to(self.tune_dir)))
        trial.set_user_attr("worker", self.worker)
        try:
            profile = load_profile(path).profile
        except ProfileError as error:
            trial.set_user_attr("error", str(error).splitlines()[0])
            raise TrialFailed(f"trial {trial.number}: the sampled profile is refused: {error}") from None
        trial.set_user_attr(
            COST_ATTR, round(get_backbone(profile.backbone.name).macs_millions_at(profile.backbone.input_size), 1)
        )
        pruner = CheaperTrialsPruner(study, trial, trial.user_attrs[COST_ATTR]) if self.cfg.pruning else None
        log = FileLog(self.tune_dir / "logs" / f"trial-{trial.number:04d}.log")
        try:
            outcome = build(path, log=log, shared_cache=self.tune_dir / "cache", on_epoch_end=pruner)
        except EdgeTLError as error:
            if isinstance(error, UserInputError) and trial.number == 0:
                raise  # the profile itself cannot be built: no point searching
            trial.set_user_attr("error", str(error).splitlines()[0])
            raise TrialFailed(f"trial {trial.number}: {error}") from None
        finally:
            log.close()
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        assert outcome.report is not None
        objectives, measured = objective_values(outcome.report, list(self.cfg.objectives))
        measured["epochs_run"] = outcome.report["training"].get("epochs_run")
        measured["strategy_chosen"] = outcome.report["training"].get("strategy")
        trial.set_user_attr("measured", measured)
        # Optuna's convention: <= 0 is feasible; the number of budgets the deployed artefact failed.
        trial.set_constraint("budgets_failed", float(len(measured["budgets_failed"])))
        trial.set_user_attr("run_dir", str(trial_dir.relative_to(self.tune_dir)))
        from edgetl.tracking import log_trial

        log_trial(self.loaded.profile, self.tune_dir, self.study_name, trial.number, values, outcome)
        return objectives

    # -- confirmation ----------------------------------------------------------------------------

    def confirm(self, study: Any) -> dict[str, Any]:
        """Trials tied for the best holdout accuracy, rebuilt on a second holdout fold (another seeded draw).

        A small holdout saturates: on flowers six trials from 128 to 224 px scored 111/112, and the fastest of
        them was 4 points worse on val. A second fold doubles the images the choice rests on. Results are kept
        in the study (`confirmation`), so a resumed or repeated finish does not rebuild them.
        """
        from edgetl.pipeline import build
        from edgetl.tuning.results import tied_best, trial_rows

        tied = tied_best(trial_rows(study))
        if self.cfg.confirm == 0 or len(tied) < 2:
            return {}
        by_speed = sorted(tied, key=lambda r: r["latency_ms"])
        if len(by_speed) > self.cfg.confirm:  # keep the fastest, the slowest and an even spread between
            step = (len(by_speed) - 1) / (self.cfg.confirm - 1)
            by_speed = [by_speed[round(i * step)] for i in range(self.cfg.confirm)]
        recorded: dict[str, Any] = dict(study.user_attrs.get("confirmation") or {})
        for row in by_speed:
            if str(row["trial"]) in recorded:
                continue
            data = yaml.safe_load((self.tune_dir / row["profile"]).read_text(encoding="utf-8"))
            data["data"]["tune_fold"] = 1
            data["output_dir"] = str(self.tune_dir / "confirm" / f"{row['trial']:04d}")
            path = write_profile(
                self.tune_dir / "profiles" / f"confirm-{row['trial']:04d}.yaml",
                data,
                f"edgetl tune, study {self.study_name}: trial {row['trial']} on the second holdout fold",
            )
            self.log(f"confirming trial {row['trial']} ({results_text(row)}) on a second holdout fold")
            log = FileLog(self.tune_dir / "logs" / f"confirm-{row['trial']:04d}.log")
            try:
                outcome = build(path, log=log, shared_cache=self.tune_dir / "cache")
            finally:
                log.close()
            assert outcome.report is not None
            _, measured = objective_values(outcome.report, list(self.cfg.objectives))
            recorded[str(row["trial"])] = {k: measured[k] for k in ("accuracy", "correct", "images", "latency_ms")}
            study.set_user_attr("confirmation", recorded)
        return recorded


def results_text(row: dict[str, Any]) -> str:
    return f"{row['correct']}/{row['images']}, {row['latency_ms']:.2f} ms"


class FileLog(Log):
    """A trial's build log goes to tune/logs/, not to the terminal (the progress bar stays readable)."""

    def __init__(self, path: Path) -> None:
        from rich.console import Console

        super().__init__(quiet=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("a", encoding="utf-8")
        self.console = Console(file=self.handle, highlight=False, soft_wrap=True, width=160)

    @property
    def progress_enabled(self) -> bool:
        return False

    def close(self) -> None:
        self.handle.close()
