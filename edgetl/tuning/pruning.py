"""Early stopping of weak trials in a multi-objective search: successive halving among cheaper trials.

Optuna's pruners rank one objective; here a slow, accurate trial and a fast, less accurate one can
both belong on the Pareto front, so a trial is compared only with trials that cost **at most as
much** (MACs at their input size, known before training). At rung epochs 2, 4, 8, ... its
holdout accuracy is recorded in the shared study (so workers on other machines see it); if at
least half of a group of `min_group` or more such trials (itself included) were strictly more
accurate at the same epoch, it stops: a cheaper model already does better, so it cannot reach the
front. The holdout here is the trial's own early-stopping holdout, not the tune holdout it is
finally scored on.
"""

from __future__ import annotations

import math
from typing import Any

# Epoch 1 is not a rung: it is the learning-rate warm-up, where a full fine-tune (whose features move first)
# trails a frozen backbone it later overtakes; on flowers every full fine-tune was stopped there.
RUNGS = (2, 4, 8, 16, 32, 64)
COST_ATTR = "cost_mmacs"


def rung_attr(epoch: int) -> str:
    return f"rung_{epoch}"


class CheaperTrialsPruner:
    """Called after each fine-tuning epoch (`build(on_epoch_end=...)`); raises optuna.TrialPruned."""

    def __init__(self, study: Any, trial: Any, cost: float, reduction: int = 2, min_group: int = 4) -> None:
        self.study = study
        self.trial = trial
        self.cost = cost
        self.reduction = reduction
        self.min_group = min_group

    def __call__(self, record: Any) -> None:
        import optuna

        accuracy = record.holdout_accuracy
        if record.epoch not in RUNGS or accuracy is None:
            return
        key = rung_attr(record.epoch)
        self.trial.set_user_attr(key, float(accuracy))
        peers = [
            t.user_attrs[key]
            for t in self.study.get_trials(deepcopy=False)
            if t.number != self.trial.number
            and key in t.user_attrs
            and t.user_attrs.get(COST_ATTR, math.inf) <= self.cost
        ]
        group = len(peers) + 1
        if group < self.min_group:
            return
        better = sum(1 for value in peers if value > accuracy)
        keep = math.ceil(group / self.reduction)
        if better >= keep:
            self.trial.set_user_attr("pruned_at", {"epoch": record.epoch, "holdout_accuracy": float(accuracy)})
            raise optuna.TrialPruned(
                f"epoch {record.epoch}: holdout accuracy {accuracy:.1%}; {better} of {group - 1} trials at most as "
                "costly were more accurate at this epoch"
            )
