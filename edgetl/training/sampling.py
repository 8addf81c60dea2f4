"""Deterministic batches: the same training run whatever the number of processes or workers.

Every epoch has one global order of samples (seeded by seed and epoch) cut into global batches of
`batch_size`; under torchrun each rank takes its contiguous slice of every global batch. Random
augmentation and head dropout are seeded per (seed, epoch, sample), not drawn from a process-wide
random stream. So one process and N processes see the same global batches with the same
augmentations and dropout masks, and (with gradients averaged over the global batch) compute the
same updates, up to floating-point summation order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample in one epoch."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class GlobalBatchSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Yields this rank's slice of each global batch as (index, epoch) keys.

    `weights` switches to class-balanced sampling with replacement (same number of draws).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        weights: list[float] | None = None,
    ) -> None:
        if batch_size < world_size:
            raise ValueError(f"batch size {batch_size} is smaller than the {world_size} processes")
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.weights = torch.tensor(weights, dtype=torch.float64) if weights is not None else None
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        if self.weights is not None:
            return torch.multinomial(self.weights, self.size, replacement=True, generator=generator).tolist()
        return torch.randperm(self.size, generator=generator).tolist()

    def _batches(self) -> list[list[int]]:
        order = self._order()
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        # Every rank must take every step: a last batch with fewer samples than ranks is dropped.
        return [b for b in batches if len(b) >= self.world_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self._batches():
            # An even split: every rank gets len // world or one more, never nothing.
            base, extra = divmod(len(batch), self.world_size)
            start = self.rank * base + min(self.rank, extra)
            end = start + base + (1 if self.rank < extra else 0)
            yield [(index, self.epoch) for index in batch[start:end]]

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full + (1 if rest >= self.world_size else 0)
