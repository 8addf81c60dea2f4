"""Runners: one small object per inference backend, Polygraphy style (activate / infer / deactivate).

This module must not import torch: it is what a device runs. The benchmark harness drives the
same runners, so what is measured is what ships.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import ModelFileError


class Runner(ABC):
    """Runs a classification model on a preprocessed NCHW float32 batch and returns logits."""

    name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_active = False

    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    @property
    def fixed_batch(self) -> int | None:
        """The only batch size the model accepts, or None when the batch dimension is dynamic."""
        return None

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def infer_any_batch(self, batch: np.ndarray) -> np.ndarray:
        """Infer a batch of any size, splitting or padding for fixed-batch models."""
        fixed = self.fixed_batch
        if fixed is None or len(batch) == fixed:
            return self.infer(batch)
        outputs = []
        for start in range(0, len(batch), fixed):
            chunk = batch[start : start + fixed]
            real = len(chunk)
            if real < fixed:
                pad = np.repeat(chunk[-1:], fixed - real, axis=0)
                chunk = np.concatenate([chunk, pad])
            outputs.append(self.infer(chunk)[:real])
        return np.concatenate(outputs)


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime on the CPU execution provider (or any providers given) with a fixed thread count."""

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        self.path = Path(path)
        super().__init__(name or self.path.stem)
        self.threads = threads
        self.providers = providers or ["CPUExecutionProvider"]
        self.session: Any = None
        self.input_name = ""
        self._fixed_batch: int | None = None

    def _activate(self) -> None:
        import onnxruntime as ort

        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: ONNX model not found")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as error:  # ORT raises its own exception types for corrupt/invalid models
            raise ModelFileError(
                f"{self.path}: ONNX Runtime cannot load the model ({str(error).splitlines()[0]})"
            ) from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        batch_dim = model_input.shape[0] if model_input.shape else None
        self._fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None

    def _deactivate(self) -> None:
        self.session = None

    @property
    def fixed_batch(self) -> int | None:
        return self._fixed_batch

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
