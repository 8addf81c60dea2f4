"""Eager PyTorch on the training checkpoint: the baseline every shipped artefact is compared with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgetl.backends.base import Runner


class TorchRunner(Runner):
    """Eager PyTorch, as a user would run the training checkpoint (eval mode, inference_mode)."""

    def __init__(self, model: Any, name: str = "torch_fp32", threads: int | None = None) -> None:
        """`model`: an nn.Module, or the path of an edgetl checkpoint (built when first activated)."""
        super().__init__(name)
        self.model = model
        self.threads = threads
        self._previous_threads: int | None = None

    def _activate(self) -> None:
        import torch

        if isinstance(self.model, (str, Path)):
            from edgetl.backbones.checkpoint import load_checkpoint

            self.model = load_checkpoint(Path(self.model)).build_model()
        self._previous_threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        self.model.eval()

    def _deactivate(self) -> None:
        import torch

        if self._previous_threads:
            torch.set_num_threads(self._previous_threads)

    def describe(self) -> dict[str, Any]:
        import torch

        return {"runtime": "torch", "version": torch.__version__, "providers": ["eager CPU"], "threads": self.threads}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()
