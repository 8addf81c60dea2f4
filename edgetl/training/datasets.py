"""Torch datasets over the split files, with the evaluation transform shared with the runtime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

from edgetl.preprocessing import Preprocessing, load_image
from edgetl.profile import AugmentationConfig

# Decoding big JPEGs dominates small-dataset epochs; below this many images we decode once and keep
# a copy resized to the preprocessing's `resize` side in memory (~0.25 MB per image at 256 px).
PRELOAD_LIMIT = 4000

_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def train_transform(pre: Preprocessing, aug: AugmentationConfig) -> Callable[[Image.Image], torch.Tensor]:
    steps: list[Callable] = [
        T.RandomResizedCrop(
            pre.crop, scale=aug.crop_scale, ratio=aug.crop_ratio, interpolation=_INTERPOLATION[pre.interpolation]
        )
    ]
    if aug.hflip:
        steps.append(T.RandomHorizontalFlip())
    if aug.color_jitter > 0:
        steps.append(T.ColorJitter(aug.color_jitter, aug.color_jitter, aug.color_jitter))
    steps += [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    return T.Compose(steps)


def eval_transform(pre: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """The runtime's own preprocessing, as a tensor: training evaluates what the device will see."""
    return lambda image: torch.from_numpy(pre(image))


def _shrink(image: Image.Image, side: int) -> Image.Image:
    width, height = image.size
    scale = side / min(width, height)
    if scale >= 1.0:
        return image
    return image.resize((max(side, round(width * scale)), max(side, round(height * scale))), Image.Resampling.BILINEAR)


class ImageListDataset(torch.utils.data.Dataset):
    """(path, label) pairs through a transform; optionally decoded once and kept in memory."""

    def __init__(
        self,
        paths: list[Path],
        labels: list[int],
        transform: Callable[[Image.Image], torch.Tensor],
        preload_side: int | None = None,
    ) -> None:
        self.paths = paths
        self.labels = labels
        self.transform = transform
        self.preloaded: list[Image.Image] | None = None
        if preload_side and len(paths) <= PRELOAD_LIMIT:
            self.preloaded = [_shrink(load_image(p), preload_side) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.preloaded[index] if self.preloaded is not None else load_image(self.paths[index])
        return self.transform(image), self.labels[index]
