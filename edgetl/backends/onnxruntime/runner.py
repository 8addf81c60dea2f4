"""ONNX Runtime runner: the CPU execution provider (or any providers given) with a fixed thread count.

Torch-free: this is what the core install runs on a device.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.backends.base import Runner
from edgetl.errors import ModelFileError, first_line


class OnnxRuntimeRunner(Runner):
    """One InferenceSession, all graph optimizations, sequential execution, `threads` intra-op threads."""

    loads_from_memory = True

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        threads: int | None = None,
        providers: list[str] | None = None,
        verified: Mapping[Path, bytes] | None = None,
    ) -> None:
        self.path = Path(path)
        self.model = (verified or {}).get(self.path)  # already-verified bytes of `path`: never reopen the file
        super().__init__(name or self.path.stem)
        self.threads = threads
        self.providers = providers or ["CPUExecutionProvider"]
        self.session: Any = None
        self.input_name = ""
        self._fixed_batch: int | None = None
        self._input_dtype: type[np.generic] = np.float32

    def _activate(self) -> None:
        import onnxruntime as ort

        if self.model is None and not self.path.is_file():
            raise ModelFileError(f"{self.path}: ONNX model not found")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        try:
            source = self.model if self.model is not None else str(self.path)
            self.session = ort.InferenceSession(source, options, providers=self.providers)
        except Exception as error:  # ORT raises its own exception types for corrupt/invalid models
            if self.model is not None and "external" in str(error).lower():
                # Verified bytes carry no path, so weights in separate files cannot load: and they were not hashed.
                raise ModelFileError(
                    f"{self.path}: the model keeps its weights in external data files, which edgetl cannot verify "
                    "against the manifest; use the model edgetl exported (weights inside the .onnx file)"
                ) from None
            raise ModelFileError(f"{self.path}: ONNX Runtime cannot load the model ({first_line(error)})") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        # float32 tensors, or uint8 pixels for a model with its preprocessing in the graph
        self._input_dtype = np.uint8 if model_input.type == "tensor(uint8)" else np.float32
        batch_dim = model_input.shape[0] if model_input.shape else None
        self._fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None

    def _deactivate(self) -> None:
        self.session = None

    @property
    def fixed_batch(self) -> int | None:
        return self._fixed_batch

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        providers = self.session.get_providers() if self.session is not None else self.providers
        return {"runtime": "onnxruntime", "version": ort.__version__, "providers": providers, "threads": self.threads}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=self._input_dtype)})[0]
