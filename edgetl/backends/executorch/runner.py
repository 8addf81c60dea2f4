"""ExecuTorch runner: the `executorch.runtime` Python bindings, XNNPACK delegate, fixed threads.

The programs are exported at batch 1 (what an app runs) and take and return float32 tensors, also
the int8 one: quantize and dequantize nodes run inside the delegate. The runtime's native log
(cpuinfo probing, threadpool resets) goes to the process's stderr; the runner keeps it out of the
build's output while a program loads and puts its last line into the error when loading fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.backends.base import Runner
from edgetl.console import native_log
from edgetl.errors import DependencyError, ModelFileError, first_line


def import_runtime() -> tuple[Any, Any]:
    """(Runtime singleton, the pybindings module that owns the XNNPACK threadpool)."""
    try:
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime
    except ImportError:
        raise DependencyError(
            "ExecuTorch is not installed", hint="pip install 'edgetl[executorch]' (the executorch package)"
        ) from None
    with native_log():
        return Runtime.get(), portable_lib


class ExecuTorchRunner(Runner):
    """One loaded `forward` method; `threads` XNNPACK threads while active (the pool is process-wide)."""

    loads_from_memory = True

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        threads: int | None = None,
        verified: Mapping[Path, bytes] | None = None,
    ) -> None:
        self.path = Path(path)
        self.model = (verified or {}).get(self.path)  # already-verified bytes of `path`: never reopen the file
        super().__init__(name or self.path.stem)
        self.threads = threads
        self._method: Any = None
        self._input_shape: tuple[int, ...] = ()
        self._previous_threads: int | None = None
        self._pool: Any = None

    def _activate(self) -> None:
        runtime, self._pool = import_runtime()
        if self.model is None and not self.path.is_file():
            raise ModelFileError(f"{self.path}: ExecuTorch program not found")
        with native_log():
            self._previous_threads = int(self._pool._threadpool_get_thread_count())
            if self.threads:
                self._pool._unsafe_reset_threadpool(self.threads)
        with native_log() as log:
            try:
                self._method = runtime.load_program(self.model or self.path).load_method("forward")
            except (RuntimeError, ValueError) as error:
                detail = log[-1] if log else first_line(error)
                raise ModelFileError(f"{self.path}: ExecuTorch cannot load the program ({detail})") from None
        if self._method is None:
            raise ModelFileError(f"{self.path}: the ExecuTorch program has no forward method")
        self._input_shape = tuple(int(s) for s in self._method.metadata.input_tensor_meta(0).sizes())

    def _deactivate(self) -> None:
        self._method = None
        if self.threads and self._previous_threads:
            with native_log():
                self._pool._unsafe_reset_threadpool(self._previous_threads)

    @property
    def fixed_batch(self) -> int | None:
        return self._input_shape[0] if self._input_shape else 1

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        return {
            "runtime": "executorch",
            "version": metadata.version("executorch"),
            "providers": ["XNNPACK delegate (CPU)"],
            "threads": self.threads,
        }

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        try:  # not inside native_log: capturing would add to every timed inference
            outputs = self._method.execute([tensor])
        except RuntimeError as error:
            raise ModelFileError(f"{self.path}: ExecuTorch run failed ({first_line(error)})") from None
        return outputs[0].numpy().astype(np.float32, copy=False)
