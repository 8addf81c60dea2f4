"""Data-parallel training under `torchrun`: process group setup and the few collectives we need.

`torchrun --nproc-per-node=N -m edgetl train profile.yaml` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK set. Rank 0 does all file writing; every rank trains on its shard of
the training set (DistributedSampler) and gradients are averaged by DistributedDataParallel.
Backend: NCCL on GPUs, Gloo on CPUs. Outside torchrun everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily: the pipeline imports this module before any stage runs
    import torch


@dataclass(frozen=True)
class DistributedEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistributedEnv:
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, preferred: str) -> torch.device:
        import torch

        use_cuda = preferred == "cuda" or (preferred == "auto" and torch.cuda.is_available())
        if use_cuda:
            return torch.device("cuda", self.local_rank if self.enabled else 0)
        return torch.device("cpu")

    def init(self, device: torch.device) -> None:
        """Join the process group (idempotent)."""
        import torch
        import torch.distributed as dist

        if not self.enabled or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.enabled and dist.is_initialized():
            dist.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """All-reduce a few scalars (loss sums, counts) across ranks."""
        import torch
        import torch.distributed as dist

        if not self.enabled or not dist.is_initialized():
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def shutdown(self) -> None:
        import torch.distributed as dist

        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
