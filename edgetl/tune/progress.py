"""The terminal view of a search: a progress bar over the study's trials with the best result so far.

On a terminal it is a live bar; in a log (CI, nohup) one line per finished trial.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from edgetl.console import Log


def best_so_far(study: Any) -> str:
    """What the pick rule would choose now (before any second-fold confirmation), in a few words."""
    from edgetl.tune.results import pick, tied_best, trial_rows

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

    def update(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        study, trial, total = event["study"], event["trial"], event["total"]
        finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))
        best = best_so_far(study)
        if self.live:
            self.progress.update(self.task, completed=finished, total=total, description=best)
            return
        measured = trial.user_attrs.get("measured")
        what = (
            f"{measured['accuracy']:.1%}, {measured['latency_ms']:.2f} ms"
            if measured
            else trial.user_attrs.get("error") or str(trial.user_attrs.get("pruned_at") or {})
        )
        self.log(f"trial {trial.number} {trial.state.name.lower()} ({what}); {finished}/{total} finished; {best}")

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()
