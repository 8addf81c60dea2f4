"""How long a fine-tune trains when the profile leaves `finetune.epochs` unset.

Torch-free on purpose: the profile's field help quotes these numbers, and loading a profile must not
need the training extra.
"""

from __future__ import annotations

import math

# Training images seen by the fine-tune (epochs = this / training images, clamped): enough for AdamW
# with a cosine schedule to converge on a few hundred images. Measured on the suite: 6,000 (15 epochs
# on blood cells' 408 training images) left the fine-tune 2.1 points below a 25-epoch recipe (93.3 %
# vs 95.4 %); 25 epochs reached 95.0 %. On 2 cores (~27 images/s at 224 px, EfficientNet-Lite0, AVX-512;
# ~10 on AVX2-only CPUs) 10,000 images take ~6 minutes (~17 on AVX2).
IMAGE_BUDGET = 10_000
MIN_EPOCHS = 8
MAX_EPOCHS = 25


def auto_epochs(train_images: int) -> int:
    """Epochs for `train_images` when the profile leaves `finetune.epochs` unset."""
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(IMAGE_BUDGET / max(1, train_images)))))


def planned_epochs(configured: int | None, train_images: int) -> int:
    """The epochs a fine-tune runs: the profile's `finetune.epochs`, or `auto_epochs`."""
    return configured or auto_epochs(train_images)


# Progressive resizing moves in steps of the network's output stride, so every side tiles exactly.
SIZE_STEP = 32


def progressive_sizes(full: int, epochs: int, start_scale: float, full_from: float) -> list[int]:
    """The training crop side of each epoch (index 0 is epoch 1): from `start_scale * full` up to `full`.

    The side grows linearly until epoch `round(full_from * epochs)`, rounded to a multiple of `SIZE_STEP`
    and never below `start_scale * full`; from there on it is `full`. `start_scale` 1 (or one epoch) keeps
    `full` throughout.
    """
    ramp_end = max(1, round(full_from * epochs))
    smallest = SIZE_STEP * math.ceil(start_scale * full / SIZE_STEP)  # never below start_scale
    sizes = []
    for epoch in range(1, epochs + 1):
        if epoch >= ramp_end or start_scale >= 1.0:
            sizes.append(full)
            continue
        side = full * (start_scale + (1.0 - start_scale) * (epoch - 1) / (ramp_end - 1))
        sizes.append(min(full, max(smallest, SIZE_STEP * round(side / SIZE_STEP))))
    return sizes


def describe_sizes(sizes: list[int]) -> str:
    """'224 px', or for a schedule the epochs at each side: '160 px (4 epochs), 192 px (7), 224 px (14)'."""
    runs: list[tuple[int, int]] = []
    for side in sizes:
        if runs and runs[-1][0] == side:
            runs[-1] = (side, runs[-1][1] + 1)
        else:
            runs.append((side, 1))
    if len(runs) == 1:
        return f"{runs[0][0]} px"
    first, *rest = runs
    head = f"{first[0]} px ({first[1]} epoch{'s' if first[1] > 1 else ''})"
    return ", ".join([head] + [f"{side} px ({count})" for side, count in rest])
