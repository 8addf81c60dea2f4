"""Torch datasets over the split files, with the evaluation transform shared with the runtime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

from edgetl.preprocessing import Preprocessing, load_image
from edgetl.profile import AugmentationConfig
from edgetl.training.sampling import sample_seed

# Decoding big JPEGs dominates small-dataset epochs; below this many images we decode once and keep
# a copy resized to the preprocessing's `resize` side in memory (~0.25 MB per image at 256 px).
PRELOAD_LIMIT = 4000
# Memoized preprocessed tensors cost ~0.6 MB per image at 224 px.
MEMO_LIMIT = 2000

_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def train_transform(
    pre: Preprocessing, aug: AugmentationConfig, size: int | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """Random-resized crops at `size` (default: the deployed crop), flips, jitter, then the runtime's normalization."""
    steps: list[Callable] = [
        T.RandomResizedCrop(
            size or pre.crop,
            scale=aug.crop_scale,
            ratio=aug.crop_ratio,
            interpolation=_INTERPOLATION[pre.interpolation],
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


Key = int | tuple[int, int]  # an index, or (index, epoch) from GlobalBatchSampler
Transform = Callable[[Image.Image], torch.Tensor]


class ResizingSchedule:
    """The training transform of each epoch when the crop side changes over training (progressive resizing).

    `sizes[e - 1]` is epoch e's side (`edgetl.epochs.progressive_sizes`); `build(side)` makes the
    transform at that side, once per distinct side. Epochs past the list keep the last side.
    """

    def __init__(self, sizes: list[int], build: Callable[[int], Transform]) -> None:
        if not sizes:
            raise ValueError("a resizing schedule needs at least one epoch")
        self.sizes = sizes
        self._by_size = {side: build(side) for side in sorted(set(sizes))}

    def side(self, epoch: int) -> int:
        return self.sizes[min(max(epoch, 1), len(self.sizes)) - 1]

    def transform(self, epoch: int) -> Transform:
        return self._by_size[self.side(epoch)]


class ImageListDataset(torch.utils.data.Dataset):
    """(path, label) pairs through a transform, with two memory caches for small datasets.

    Items are (image tensor, label, sample seed). A random transform is seeded per (seed, epoch,
    index), so augmentation does not depend on process count, worker count or order. `decode` is
    the model's own (`Preprocessing.decode`: orientation and colour policy), so training sees the
    pixels the device will.
    `preload_side`: decode every image once and keep a copy resized to that shorter side (for
    random augmentation). `memoize`: the transform is deterministic, so keep its output. `schedule`: a
    transform per epoch (progressive resizing) used for (index, epoch) keys instead of `transform`.
    """

    def __init__(
        self,
        paths: list[Path],
        labels: list[int],
        transform: Transform,
        preload_side: int | None = None,
        memoize: bool = False,
        seed: int = 0,
        decode: Callable[[Path], Image.Image] = load_image,
        schedule: ResizingSchedule | None = None,
    ) -> None:
        if schedule is not None and memoize:
            raise ValueError("a memoized dataset cannot change its transform by epoch")
        self.paths = paths
        self.decode = decode
        self.labels = labels
        self.transform = transform
        self.seed = seed
        self.schedule = schedule
        self.preloaded: list[Image.Image] | None = None
        if preload_side and len(paths) <= PRELOAD_LIMIT:
            self.preloaded = [_shrink(decode(p), preload_side) for p in paths]
        self.memo: dict[int, torch.Tensor] | None = {} if memoize and len(paths) <= MEMO_LIMIT else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int, int]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        seed = sample_seed(self.seed, epoch, index)
        if self.memo is not None and index in self.memo:
            return self.memo[index], self.labels[index], seed
        image = self.preloaded[index] if self.preloaded is not None else self.decode(self.paths[index])
        transform = self.schedule.transform(epoch) if self.schedule is not None and epoch else self.transform
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tensor = transform(image)
        if self.memo is not None:
            self.memo[index] = tensor
        return tensor, self.labels[index], seed


class FeatureDataset(torch.utils.data.Dataset):
    """Cached backbone features with the same item shape as ImageListDataset."""

    def __init__(self, features: torch.Tensor, labels: list[int], seed: int = 0) -> None:
        self.features = features
        self.labels = labels
        self.seed = seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int, int]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        return self.features[index], self.labels[index], sample_seed(self.seed, epoch, index)
