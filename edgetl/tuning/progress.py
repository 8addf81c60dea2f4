"""The terminal view of a search: a progress bar over the study's trials with the best result so far.

On a terminal it is a live bar; in a log (CI, nohup) one line per finished trial.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from edgetl.console import Log


@dataclass(frozen=True)
class TrialEvent:
    """One finished trial of a study, as `edgetl.tune(on_trial=...)` and the progress line see it."""

    number: int
    """The trial's number in the study."""
    state: str
    """`COMPLETE`, `PRUNED` or `FAIL`."""
    params: dict[str, Any] = field(default_factory=dict)
    """The sampled settings."""
    measured: dict[str, Any] | None = None
    """Accuracy (tune holdout), latency_ms, size_mb; None unless complete."""
    note: str = ""
    """Why it failed, or where it was pruned."""
    finished: int = 0
    """Complete or pruned trials of the whole study so far."""
    total: int = 0
    """Trials the study runs."""
    best: str = ""
    """What the pick rule would choose now, in a few words."""


def trial_event(study: Any, trial: Any, total: int) -> TrialEvent:
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))
    note = trial.user_attrs.get("error") or str(trial.user_attrs.get("pruned_at") or "")
    return TrialEvent(
        number=trial.number,
        state=trial.state.name,
        params=dict(trial.params),
        measured=trial.user_attrs.get("measured"),
        note=note,
        finished=finished,
        total=total,
        best=best_so_far(study),
    )


def best_so_far(study: Any) -> str:
    """What the pick rule would choose now (before any second-fold confirmation), in a few words."""
    from edgetl.tuning.results import pick, tied_best, trial_rows

    best = pick(tied_best(trial_rows(study)))
    if best is None:
        return "no feasible trial yet"
    return (
        f"best so far: trial {best['trial']}, {best['accuracy']:.1%} at {best['latency_ms']:.2f} ms, "
        f"{best['size_mb']:.2f} MB"
    )


class TrialProgress:
    def __init__(self, log: Log, enabled: bool = True) -> None:
        self.log = log
        self.enabled = enabled
        self.live = enabled and sys.stderr.isatty()
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> TrialProgress:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("tune"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=self.log.console,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("starting", total=None)
        return self

    def update(self, event: TrialEvent) -> None:
        if not self.enabled:
            return
        if self.live:
            self.progress.update(self.task, completed=event.finished, total=event.total, description=event.best)
            return
        measured = event.measured
        what = f"{measured['accuracy']:.1%}, {measured['latency_ms']:.2f} ms" if measured else event.note
        progress = f"{event.finished}/{event.total} finished"
        self.log(f"trial {event.number} {event.state.lower()} ({what}); {progress}; {event.best}")

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()
