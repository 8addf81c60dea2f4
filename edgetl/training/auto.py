"""`strategy: auto` (the default): measure two candidates on the holdout and keep the better one.

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

The choice is not binary. A holdout of 36-85 images cannot tell two candidates apart by one or
two images (one image is 1-3 points; on a 300-image set the probe kept on a 2-image lead was 8.9
points worse on val than a fine-tune), so `auto` keeps a **weight-space mix** of the two
(WiSE-FT, Wortsman et al., 2022): `(1 - a) * probe + a * fine-tune`, every weight and BatchNorm
statistic interpolated, then the BatchNorm statistics of a mix are recomputed on training
images (`recalibrate_batchnorm`). The fine-tune started from the probe (same pretrained backbone, the
probe's head), so the mixes lie in one basin and the middle is usually as good as the better end
or better. `a = 0.5`, WiSE-FT's recommended mix, is kept unless another mix of `MIX_GRID` is
better on the holdout by a one-sided exact sign test on the images they disagree on (p <= 0.05):
the ends win only on evidence, never on a one-image lead. When the probe itself (a = 0) wins, it
is refitted on train + holdout, so no image is wasted. Every mix's holdout score is recorded, so
the report says what was measured, not a rule of thumb.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
CV_FOLDS = 5
# Weight of the fine-tuned network in the kept mix: 0 is the probe, 1 the fine-tune.
MIX_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
MIX_PRIOR = 0.5  # WiSE-FT's recommended mix: kept unless the holdout clearly prefers another
EVIDENCE_P = 0.05  # one-sided sign test a mix must pass to replace the prior
BATCHNORM_IMAGES = 256  # training images a mix's BatchNorm statistics are recomputed on


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

    strategy: str  # "feature_extract" (the probe alone) or "full" (a mix with fine-tuned weight > 0)
    mix: float  # weight of the fine-tuned network in the kept model
    batchnorm_images: int  # training images a mix's BatchNorm statistics were recomputed on
    reason: str
    mix_holdout_correct: dict[str, int]  # mix weight -> holdout images right
    probe_holdout_accuracy: float | None
    probe_holdout_loss: float | None
    probe_l2: float
    probe_cv_accuracy: dict[str, float]
    probe_refit_images: int  # images the kept probe was fitted on (train + holdout when it won)
    finetune_holdout_accuracy: float | None
    finetune_holdout_loss: float | None
    holdout_images: int
    train_resolution: int
    epochs: int
    finetune_seconds: float
    probe_seconds: float
    mix_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mix_states(probe: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], weight: float) -> dict[str, Any]:
    """`(1 - weight) * probe + weight * tuned` for every floating tensor; counters come from the fine-tune."""
    mixed: dict[str, Any] = {}
    for key, value in tuned.items():
        if value.is_floating_point():
            mixed[key] = torch.lerp(probe[key].to(value.dtype), value, weight)
        else:
            mixed[key] = value.clone()
    return mixed


def recalibrate_batchnorm(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Recompute every BatchNorm's running statistics as the plain average over `batches` (no gradients).

    Interpolated weights change what each layer's inputs look like, and interpolated running statistics
    do not follow: the mismatch costs accuracy and, worse, stretches activation ranges that int8 then has
    to cover (on a tiny test set a mix kept 79 % int8 agreement before this, the ends ~100 %). One
    forward pass over training images puts the statistics back in line (as for model soups of BN nets).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches
    model.train()
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.eval()


def batchnorm_batches(pre: Any, paths: list[Any], seed: int) -> tuple[Callable[[], Iterator[torch.Tensor]], int]:
    """Batches of up to BATCHNORM_IMAGES training images (a seeded sample, eval preprocessing), decoded on demand."""
    sample = list(paths)
    random.Random(seed).shuffle(sample)
    sample = sample[:BATCHNORM_IMAGES]

    def batches() -> Iterator[torch.Tensor]:
        for start in range(0, len(sample), 32):
            yield torch.from_numpy(pre.batch(sample[start : start + 32]))

    return batches, len(sample)


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact sign test: the chance of >= `wins` of `wins + losses` disagreements if neither is better."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def choose_mix(correct: dict[float, torch.Tensor]) -> tuple[float, str]:
    """The kept mix: MIX_PRIOR unless another mix is better on the holdout by the sign test.

    `correct` maps each mix weight to a boolean vector over the same holdout images. Among mixes that
    pass the test, the one with the most images right; ties go to the mix nearer the prior.
    """
    prior = correct[MIX_PRIOR]
    images = len(prior)
    counts = {weight: int(right.sum()) for weight, right in correct.items()}
    better: dict[float, float] = {}
    for weight, right in correct.items():
        wins, losses = int((right & ~prior).sum()), int((~right & prior).sum())
        p = sign_test_p(wins, losses)
        if weight != MIX_PRIOR and p <= EVIDENCE_P:
            better[weight] = p
    scores = ", ".join(f"{_mix_name(w)} {counts[w]}" for w in sorted(counts))
    measured = f"on {images} holdout images: {scores} right"
    if not better:
        return MIX_PRIOR, (
            f"{measured}; no mix beat the {_mix_name(MIX_PRIOR)} clearly (sign test p <= {EVIDENCE_P:g}), "
            "so the WiSE-FT mix of fine-tune and probe is kept"
        )
    chosen = max(better, key=lambda w: (counts[w], -abs(w - MIX_PRIOR)))
    return chosen, (
        f"{measured}; the {_mix_name(chosen)} beat the {_mix_name(MIX_PRIOR)} on the images they disagree on "
        f"(sign test p = {better[chosen]:.3f}) and is kept"
    )


def _mix_name(weight: float) -> str:
    if weight == 0.0:
        return "probe"
    if weight == 1.0:
        return "fine-tune"
    return f"mix {weight:g}"


def holdout_correct(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Which holdout images `model` gets right (eval mode, in chunks; CPU)."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in images.split(16)])
    return logits.argmax(1) == labels
