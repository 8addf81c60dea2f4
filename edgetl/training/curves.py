"""Training curves as a PNG: loss and accuracy per epoch, train vs holdout."""

from __future__ import annotations

from pathlib import Path

from edgetl.files import atomic_path
from edgetl.training.trainer import TrainOutcome


def plot_curves(outcome: TrainOutcome, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r.epoch for r in outcome.history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    loss_axis.plot(epochs, [r.train_loss for r in outcome.history], "o-", label="train")
    accuracy_axis.plot(epochs, [r.train_accuracy * 100 for r in outcome.history], "o-", label="train")
    held = [r for r in outcome.history if r.holdout_loss is not None]
    if held:
        loss_axis.plot([r.epoch for r in held], [r.holdout_loss for r in held], "s-", label="holdout")
        accuracy_axis.plot(
            [r.epoch for r in held], [(r.holdout_accuracy or 0) * 100 for r in held], "s-", label="holdout"
        )
    for axis in (loss_axis, accuracy_axis):
        axis.axvline(outcome.best_epoch, color="grey", linestyle=":", label=f"best epoch {outcome.best_epoch}")
        for previous, record in zip(outcome.history, outcome.history[1:], strict=False):
            if record.trainable_blocks > previous.trainable_blocks:
                axis.axvline(record.epoch - 0.5, color="tab:red", alpha=0.25)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    loss_axis.set_ylabel("cross-entropy loss")
    accuracy_axis.set_ylabel("top-1 accuracy (%)")
    figure.suptitle(f"{title} ({outcome.strategy})", fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png")
    plt.close(figure)
