"""Experiment tracking where teams already look: MLflow and/or TensorBoard, off unless the profile asks.

Each build (and each `edgetl tune` trial) becomes one MLflow run: the profile's settings as params,
the deployed artefact's accuracy, latency and size (plus every artefact's) as metrics, the training
curve as per-epoch metrics, and report.json, report.md and the deployed model as artifacts. The
default MLflow store is a SQLite file in the run directory with artifacts beside it, so nothing
needs a server or the network; `tracking.mlflow.tracking_uri` points at a shared server instead.
TensorBoard gets the training curves as scalars and the trial's settings and results as hparams.
Both packages are optional (`pip install 'edgetl[tracking]'`); a missing one is one line, exit 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetl.errors import DependencyError
from edgetl.profile import Profile

MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
TENSORBOARD_DIR = "tensorboard"


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


def build_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Every artefact's accuracy, p50/p90 latency and size, and the deployed one's under plain names."""
    metrics: dict[str, float] = {}
    for name, entry in report["artifacts"].items():
        metrics[f"{name}.accuracy"] = float(entry["accuracy"])
        if entry.get("latency_ms"):
            metrics[f"{name}.latency_p50_ms"] = float(entry["latency_ms"]["p50"])
            metrics[f"{name}.latency_p90_ms"] = float(entry["latency_ms"]["p90"])
        metrics[f"{name}.size_mb"] = entry["size_bytes"] / 1e6
    deployed = report["deployed_artifact"]
    for key in ("accuracy", "latency_p50_ms", "latency_p90_ms", "size_mb"):
        if f"{deployed}.{key}" in metrics:
            metrics[key] = metrics[f"{deployed}.{key}"]
    metrics["budgets_passed"] = float(bool(report.get("passed")))
    return metrics


def _history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "training" / "history.json"
    if not path.is_file():
        return []
    return list(json.loads(path.read_text()).get("history") or [])


@dataclass(frozen=True)
class TrackedRun:
    """One thing to log: a build or a trial, under `store_dir`'s default stores."""

    store_dir: Path  # where the default stores live (the run directory)
    name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    run_dir: Path  # the build whose report, curves and bundle are logged
    tags: dict[str, str]


def _mlflow_client(profile: Profile, run_dir: Path) -> tuple[Any, str]:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise DependencyError("tracking.mlflow needs MLflow: pip install 'edgetl[tracking]'") from None
    cfg = profile.tracking.mlflow
    assert cfg is not None
    uri = cfg.tracking_uri or f"sqlite:///{(run_dir / MLFLOW_DB).resolve()}"
    client = MlflowClient(tracking_uri=uri)
    name = cfg.experiment or profile.name
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return client, experiment.experiment_id
    location = None if cfg.tracking_uri else (run_dir / MLFLOW_ARTIFACTS).resolve().as_uri()
    return client, client.create_experiment(name, artifact_location=location)


def _log_mlflow(profile: Profile, run: TrackedRun) -> str:
    client, experiment = _mlflow_client(profile, run.store_dir)
    run_id = client.create_run(experiment, run_name=run.name, tags=run.tags).info.run_id
    try:
        for key, value in _flatten(run.params).items():
            client.log_param(run_id, key, str(value)[:6000])
        for key, value in run.metrics.items():
            client.log_metric(run_id, key, value)
        for record in _history(run.run_dir):
            for key in ("train_loss", "train_accuracy", "holdout_loss", "holdout_accuracy"):
                if record.get(key) is not None:
                    client.log_metric(run_id, f"epoch.{key}", float(record[key]), step=int(record["epoch"]))
        for name in ("report.json", "report.md"):
            if (run.run_dir / name).is_file():
                client.log_artifact(run_id, str(run.run_dir / name))
        if profile.tracking.log_models and (run.run_dir / "bundle").is_dir():
            client.log_artifacts(run_id, str(run.run_dir / "bundle"), artifact_path="bundle")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def _log_tensorboard(profile: Profile, run: TrackedRun) -> Path:
    cfg = profile.tracking.tensorboard
    assert cfg is not None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DependencyError("tracking.tensorboard needs TensorBoard: pip install 'edgetl[tracking]'") from None
    log_dir = (cfg.log_dir or run.store_dir / TENSORBOARD_DIR) / run.name
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for record in _history(run.run_dir):
            for key in ("train_loss", "train_accuracy", "holdout_loss", "holdout_accuracy"):
                if record.get(key) is not None:
                    writer.add_scalar(f"training/{key}", float(record[key]), int(record["epoch"]))
        flat = _flatten(run.params)
        hparams = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flat.items()}
        plain = {f"result/{k}": v for k, v in run.metrics.items() if "." not in k}
        writer.add_hparams(hparams, plain, run_name=".")
    finally:
        writer.close()
    return log_dir


@contextmanager
def _local_store_lock(profile: Profile, store_dir: Path) -> Iterator[None]:
    """The default SQLite store is one file: tune workers on this machine take turns (its first use migrates the
    schema, and two processes migrating at once fail with 'table _alembic_tmp_... already exists')."""
    if profile.tracking.mlflow is None or profile.tracking.mlflow.tracking_uri is not None:
        yield
        return
    import fcntl

    store_dir.mkdir(parents=True, exist_ok=True)
    with open(store_dir / f".{MLFLOW_DB}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def enabled(profile: Profile) -> bool:
    return profile.tracking.mlflow is not None or profile.tracking.tensorboard is not None


def log_build(profile: Profile, run_dir: Path, report: dict[str, Any], kind: str = "build") -> dict[str, Any]:
    """One build: its resolved settings, the report's metrics, the report and the bundle."""
    if not enabled(profile):
        return {}
    params = profile.model_dump(mode="json", exclude={"tune", "tracking"})
    tags = {"edgetl.kind": kind}
    return _log(profile, TrackedRun(run_dir, f"{kind}-{profile.name}", params, build_metrics(report), run_dir, tags))


def log_trial(
    profile: Profile,
    tune_dir: Path,
    study: str,
    number: int,
    values: dict[str, Any],
    outcome: Any,
) -> dict[str, Any]:
    """One tuning trial: the sampled settings as params, its measurements on the tune holdout as metrics."""
    if not enabled(profile) or outcome.report is None:
        return {}
    tags = {"edgetl.kind": "tune-trial", "edgetl.study": study, "edgetl.trial": str(number)}
    name = f"{study}-trial-{number:04d}"
    metrics = build_metrics(outcome.report)
    return _log(profile, TrackedRun(tune_dir.parent, name, values, metrics, outcome.run_dir, tags))


def _log(profile: Profile, run: TrackedRun) -> dict[str, Any]:
    logged: dict[str, Any] = {}
    if profile.tracking.mlflow is not None and profile.tracking.mlflow.enabled:
        with _local_store_lock(profile, run.store_dir):
            logged["mlflow_run_id"] = _log_mlflow(profile, run)
    if profile.tracking.tensorboard is not None and profile.tracking.tensorboard.enabled:
        logged["tensorboard"] = str(_log_tensorboard(profile, run))
    return logged
