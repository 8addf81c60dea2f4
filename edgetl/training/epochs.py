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
