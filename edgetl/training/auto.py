"""`strategy: auto` (the default): two candidates on the holdout; the fine-tune unless the probe is clearly better.

Thresholds on data size and probe accuracy guessed wrong on data nobody tuned them for (issue 12:
a frozen backbone on blood-cell microscopy gave 69.6 % where a full fine-tune gave 96.3 %). So
`auto` measures instead:

1. **linear probe**: multinomial logistic regression on frozen pretrained features, trained to
   convergence (L-BFGS) with its L2 strength chosen by stratified k-fold cross-validation on the
   training images. Cheap (one backbone pass), and it *is* the `feature_extract` model.
2. **fine-tune (LP-FT)**: every block trains, starting from the probe's head, so the first steps
   do not push random-head gradients into the pretrained features (Kumar et al., 2022,
   "Fine-Tuning can Distort Pretrained Features"); pretrained layers learn at
   `lr * backbone_lr_ratio`, with label smoothing, augmentation and a cosine schedule to zero,
   at the deployed input size. (Training at 3/4 of it, FixRes-style, is 2-3x faster on CPU but
   measured harmful: on DTD textures the holdout fell from the probe's 88.9 % to 66.7 % after 3
   epochs at 160 px, while 3 epochs at 224 px reached 88.9 %; texture scale is the class.)

The holdout (train images never trained on; val is never used) decides, but a holdout of 36-85
images cannot tell two candidates apart by one or two images (one image is 1-3 points): on a
300-image set the probe, kept on a 2-image lead, was 8.9 points worse on val than a fine-tune.
The two mistakes do not cost the same: where the probe is really better (DTD textures) it is by
1-3 points; where the fine-tune is, by 9-12 (blood cells 11.6, that set 8.9). So the
fine-tune is kept unless the probe is **clearly** better: a one-sided exact sign test on the
holdout images the two disagree on (`EVIDENCE_P`; 5 of 5 disagreements, 7 of 8, ...). When the
probe wins, it is refitted on train + holdout (its L2 carries over), so no image is wasted.

A continuous choice was measured first and dropped: weight-space mixes of the two (WiSE-FT,
Wortsman et al., 2022), BatchNorm statistics recomputed, were far worse than either end on aerial
scenes (val: probe 97.1 %, mixes 0.25 / 0.5 / 0.75 at 83.8 / 89.2 / 92.5 %, fine-tune 99.2 %):
25 epochs of full fine-tuning at these learning rates leave the probe's basin, so the straight
line between them is not a path of good models (benchmarks/results/auto_mix_aid.md).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
CV_FOLDS = 5
EVIDENCE_P = 0.05  # one-sided sign test the probe must pass to replace the fine-tune


@dataclass(frozen=True)
class LinearProbe:
    """A logistic-regression head in the raw feature space (ready to copy into a Linear layer)."""

    weight: torch.Tensor  # (classes, features)
    bias: torch.Tensor  # (classes,)
    l2: float
    cv_accuracy: dict[float, float]  # L2 strength -> mean cross-validated accuracy on train

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T + self.bias

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.logits(features).argmax(1) == labels).float().mean())

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return float(torch.nn.functional.cross_entropy(self.logits(features), labels))


def _fit_standardized(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float) -> tuple[torch.Tensor, ...]:
    """Multinomial logistic regression by full-batch L-BFGS; x is already standardized."""
    weight = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=500, tolerance_grad=1e-6, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def _centre_and_scale(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean, and ONE scale for every feature (the mean per-feature standard deviation).

    Per-feature standardization would divide by the near-zero spread of dead features (ReLU6 channels
    that are ~0 on every image), and the raw head would then carry weights 1000x the median: one
    such weight per row sets the row's int8 scale and rounds every other weight to zero (seen on
    NEU steel defects: int8 agreement 17 %). A single scale keeps the L2 penalty uniform in raw units.
    """
    return x.mean(0), x.std(0).mean().clamp(min=1e-6)


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """Index sets of `folds` folds, each class spread evenly over them (seeded)."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels.numpy()):
        indices = np.flatnonzero(labels.numpy() == label)
        rng.shuffle(indices)
        assignment[indices] = np.arange(len(indices)) % folds
    return [torch.from_numpy(np.flatnonzero(assignment == fold)) for fold in range(folds)]


def fit_linear_probe(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int = 0, grid: tuple[float, ...] = L2_GRID
) -> LinearProbe:
    """Logistic regression with its L2 strength chosen by stratified k-fold CV, refit on every image."""
    x = features.double()
    counts = torch.bincount(labels, minlength=num_classes)
    folds = int(min(CV_FOLDS, counts[counts > 0].min().item()))
    scores: dict[float, float] = {}
    if folds >= 2 and len(grid) > 1:
        fold_sets = stratified_folds(labels, folds, seed)
        for l2 in grid:
            correct = 0
            for held in fold_sets:
                keep = torch.ones(len(labels), dtype=torch.bool)
                keep[held] = False
                mean, std = _centre_and_scale(x[keep])
                weight, bias = _fit_standardized((x[keep] - mean) / std, labels[keep], num_classes, l2)
                predicted = (((x[held] - mean) / std) @ weight + bias).argmax(1)
                correct += int((predicted == labels[held]).sum())
            scores[l2] = correct / len(labels)
        # Ties go to the stronger penalty: the simpler model, and the one a small set cannot fool.
        best = max(grid, key=lambda l2: (scores[l2], l2))
    else:
        best = grid[len(grid) // 2]
    mean, std = _centre_and_scale(x)
    weight, bias = _fit_standardized((x - mean) / std, labels, num_classes, best)
    raw_weight = (weight / std).T  # undo the scaling: one Linear layer on raw features
    raw_bias = bias - (mean / std) @ weight
    return LinearProbe(raw_weight.float(), raw_bias.float(), best, scores)


@dataclass
class AutoDecision:
    """What `auto` measured and chose; goes into training/history.json and the report."""

    strategy: str  # "full" (the fine-tune) or "feature_extract" (the probe)
    reason: str
    probe_holdout_accuracy: float | None
    probe_holdout_loss: float | None
    probe_l2: float
    probe_cv_accuracy: dict[str, float]
    probe_refit_images: int  # images the kept probe was fitted on (train + holdout when it won)
    finetune_holdout_accuracy: float | None
    finetune_holdout_loss: float | None
    holdout_images: int
    holdout_disagreements: dict[str, int]  # images only the probe got right, only the fine-tune did
    evidence_p: float | None  # one-sided sign test that the probe is better
    train_resolution: int
    epochs: int
    finetune_seconds: float
    probe_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact sign test: the chance of >= `wins` of `wins + losses` disagreements if neither is better."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def disagreements(probe_right: torch.Tensor, tuned_right: torch.Tensor) -> tuple[int, int]:
    """Holdout images only the probe got right, and only the fine-tune got right."""
    return int((probe_right & ~tuned_right).sum()), int((tuned_right & ~probe_right).sum())


def decide(probe_right: torch.Tensor | None, tuned_right: torch.Tensor | None) -> tuple[str, str, float | None]:
    """The fine-tune unless the probe is clearly better on the holdout; (strategy, reason, sign-test p).

    `probe_right` / `tuned_right` say which holdout images each candidate got right (same images, same order).
    """
    if probe_right is None or tuned_right is None or len(probe_right) == 0:
        return "full", "no holdout images to compare on: the fine-tune is kept", None
    wins, losses = disagreements(probe_right, tuned_right)
    p = sign_test_p(wins, losses)
    measured = (
        f"on {len(probe_right)} holdout images the fine-tune got {int(tuned_right.sum())} right, the linear probe "
        f"on frozen features {int(probe_right.sum())} (they disagree on {wins + losses}: {wins} for the probe, "
        f"{losses} for the fine-tune; sign test p = {p:.3f})"
    )
    if p <= EVIDENCE_P:
        return "feature_extract", f"{measured}: the probe is clearly better and is kept", p
    return "full", f"{measured}: the probe is not clearly better, so the fine-tuned network is kept", p


def holdout_correct(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Which holdout images `model` gets right (eval mode, in chunks; CPU)."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in images.split(16)])
    return logits.argmax(1) == labels


def fit_probe(
    built: Any, pre: Any, paths: list[Path], labels: list[int], holdout: Any, seed: int, log: Any
) -> tuple[dict[str, Any], tuple[Any, Any]]:
    """`auto`, candidate 1: a logistic-regression head on frozen features, copied into the model's head.

    Returns what was measured and the (train, holdout) features, for a refit on both if the probe is kept.
    """
    built.model.eval()
    held = None
    with torch.no_grad():
        features = torch.cat(
            [built.features(torch.from_numpy(pre.batch(paths[i : i + 16]))) for i in range(0, len(paths), 16)]
        )
        probe = fit_linear_probe(features, torch.tensor(labels), built.num_classes, seed)
        built.head.weight.copy_(probe.weight)
        built.head.bias.copy_(probe.bias)
        accuracy = loss = None
        if holdout is not None and len(holdout[0]):
            held = torch.cat([built.features(chunk) for chunk in holdout[0].split(16)])
            accuracy, loss = probe.accuracy(held, holdout[1]), probe.loss(held, holdout[1])
    cv = ", ".join(f"{l2:g}: {score:.1%}" for l2, score in probe.cv_accuracy.items())
    log(
        f"strategy auto: linear probe on frozen features, L2 {probe.l2:g} by cross-validation ({cv})"
        + (f"; holdout accuracy {accuracy:.1%}" if accuracy is not None else "")
        + "; now fine-tuning every block from it"
    )
    info = {
        "probe_holdout_accuracy": accuracy,
        "probe_holdout_loss": loss,
        "probe_l2": probe.l2,
        "probe_cv_accuracy": {f"{l2:g}": score for l2, score in probe.cv_accuracy.items()},
        "holdout_images": 0 if holdout is None else len(holdout[0]),
        "seed": seed,
    }
    return info, (features, torch.tensor(labels), held)


def settle_auto(
    auto: dict[str, Any],
    outcome: Any,
    built: Any,
    probe_state: dict[str, Any],
    epochs: int,
    train_size: int,
    log: Any,
    holdout: Any,
    probe_features: tuple[Any, Any, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """`auto`, the decision: the fine-tune unless the probe is clearly better on the holdout (`decide`).

    Loads the kept weights into `built` and fills `auto` with what was measured; returns both candidates.
    """
    last = outcome.history[-1] if outcome.history else None
    tuned_state = copy.deepcopy(built.model.state_dict())
    probe_right = tuned_right = None
    if holdout is not None and len(holdout[0]):
        tuned_right = holdout_correct(built.model, holdout[0], holdout[1])
        built.model.load_state_dict(probe_state)
        probe_right = holdout_correct(built.model, holdout[0], holdout[1])
    strategy, reason, p = decide(probe_right, tuned_right)
    refit_images = len(probe_features[1]) if probe_features is not None else 0
    built.model.load_state_dict(probe_state if strategy == "feature_extract" else tuned_state)
    if strategy == "feature_extract" and probe_features is not None and probe_features[2] is not None:
        # The holdout has done its job: the kept probe learns from its images too (the L2 choice carries over).
        features, labels, held = probe_features
        probe = fit_linear_probe(
            torch.cat([features, held]), torch.cat([labels, holdout[1]]), built.num_classes, auto["seed"],
            grid=(auto["probe_l2"],),
        )  # fmt: skip
        with torch.no_grad():
            built.head.weight.copy_(probe.weight)
            built.head.bias.copy_(probe.bias)
        refit_images += len(held)
        reason += f"; it was refitted on train + holdout ({refit_images} images)"
    log(f"strategy auto: {reason}")
    probe_only, finetune_only = (0, 0) if p is None else disagreements(probe_right, tuned_right)
    decision = AutoDecision(
        strategy=strategy,
        reason=reason,
        finetune_holdout_accuracy=last.holdout_accuracy if last else None,
        finetune_holdout_loss=last.holdout_loss if last else None,
        train_resolution=train_size,
        epochs=epochs,
        finetune_seconds=outcome.seconds,
        **{k: auto[k] for k in ("probe_holdout_accuracy", "probe_holdout_loss", "probe_l2", "probe_cv_accuracy")},
        probe_refit_images=refit_images,
        holdout_images=auto["holdout_images"],
        holdout_disagreements={"probe_only": probe_only, "finetune_only": finetune_only},
        evidence_p=p,
        probe_seconds=auto["probe_seconds"],
    )
    auto.clear()
    auto.update(decision.to_dict())
    return {"probe": probe_state, "finetune": tuned_state}
