"""Where a study lives: Optuna's RDB storage (SQLite file by default, PostgreSQL to share between machines).

Workers that share a storage URL and a study name run one study: Optuna hands each trial number to
exactly one worker. Every running trial sends a heartbeat; a worker that dies (killed, machine
lost) stops sending it, and the next worker to start a trial marks the dead one's trial failed
(`fail_stale_trials`), so the study still reaches its trial count.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

from edgetl.errors import DependencyError, ProfileError, UserInputError

STUDY_FILE = "study.db"
HEARTBEAT_SECONDS = 30


def storage_url(url: str | None, tune_dir: Path) -> str:
    """The SQLAlchemy URL: the given one (postgresql:// uses psycopg 3), or a SQLite file in tune/."""
    if url is None:
        return f"sqlite:///{(tune_dir / STUDY_FILE).resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redact(url: str) -> str:
    """The URL without its password, for reports and logs."""
    # Up to the last '@' before the path: a password with an unencoded '@' is hidden whole, not in part.
    return re.sub(r"(://[^:/@]+):[^/]*@", r"\1:***@", url)


def open_storage(url: str, heartbeat: float = HEARTBEAT_SECONDS) -> Any:
    """Optuna's RDB storage with heartbeats; one clear line when the database cannot be reached."""
    try:
        import optuna
    except ImportError:
        raise DependencyError("edgetl tune needs Optuna: pip install 'edgetl[tune]'") from None
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine["connect_args"] = {"timeout": 60}  # several local workers may write at once
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental; they recover dead workers' trials
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=max(1, int(heartbeat)),
                    grace_period=max(2, int(heartbeat * 2)),
                )
        except Exception as error:
            # Workers started together on an empty database race to create Optuna's tables; the losers see
            # "already exists" / a duplicate key in the catalogue, and find the tables there a moment later.
            if attempt + 1 < _SCHEMA_ATTEMPTS and _lost_schema_race(error):
                time.sleep(0.5 + attempt)
                continue
            raise _storage_error(url, error) from None
    raise AssertionError("unreachable")


_SCHEMA_ATTEMPTS = 5


def _lost_schema_race(error: Exception) -> bool:
    text = str(error).lower()
    return "already exists" in text or "duplicate key" in text or "uniqueviolation" in text


def _storage_error(url: str, error: Exception) -> UserInputError:
    """One line for what went wrong opening the database: a missing driver, or the database's own message."""
    if isinstance(error, ModuleNotFoundError):
        return DependencyError(
            f"storage {redact(url)}: its database driver is missing ({error.name}); for PostgreSQL: "
            "pip install 'edgetl[tune]' (psycopg)"
        )
    message = str(error).splitlines()[0] if str(error) else type(error).__name__  # SQLAlchemy's errors
    return UserInputError(f"storage {redact(url)}: cannot open the study database ({message})")


def open_study(
    storage: Any, name: str, directions: list[str], sampler: Any, resume: bool, signature: dict[str, Any], where: str
) -> Any:
    """Create the study, or with `resume` continue (or join) it; a study made for another search is refused."""
    import optuna

    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    if name in existing and not resume:
        count = existing[name].n_trials
        raise ProfileError(
            f"{where}: study {name!r} already exists with {count} trial(s) in this storage",
            hint="--resume continues it (other workers join with --resume too); --study NAME starts another",
        )
    study = optuna.create_study(
        storage=storage, study_name=name, directions=directions, sampler=sampler, load_if_exists=True
    )
    recorded = study.user_attrs.get("signature")
    if recorded is None:
        study.set_user_attr("signature", signature)
    elif recorded != signature:
        changed = sorted(k for k in set(recorded) | set(signature) if recorded.get(k) != signature.get(k))
        raise ProfileError(
            f"{where}: study {name!r} was created for another search (different {', '.join(changed)})",
            hint="use --study NAME for a new study",
        )
    return study


def make_sampler(kind: str, seed: int, startup: int) -> Any:
    """The search algorithm; budgets reach it as trial constraints (`Trial.set_constraint`)."""
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    with warnings.catch_warnings():  # multivariate TPE is marked experimental; it models joint choices far better
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True)
