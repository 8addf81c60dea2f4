"""LiteRT runner: ai-edge-litert's interpreter with the XNNPACK CPU delegate, fixed threads.

A full-integer model takes int8 input and gives int8 output; the runner quantizes the float batch
with the input tensor's own scale and zero point and dequantizes the logits, so every runner takes
and returns the same float tensors (a device app does the same two steps, see the bundle README).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.backends.base import Runner
from edgetl.console import native_output_captured
from edgetl.errors import DependencyError, ModelFileError, first_line


def import_interpreter() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise DependencyError(
            "LiteRT is not installed", hint="pip install 'edgetl[litert]' (the ai-edge-litert package)"
        ) from None
    return Interpreter


def quantize(values: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    dtype = details["dtype"]
    if dtype == np.float32:
        return np.ascontiguousarray(values, dtype=np.float32)
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    if details["dtype"] == np.float32:
        return np.array(values, dtype=np.float32)
    scale, zero_point = details["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


class LiteRTRunner(Runner):
    """One interpreter, `threads` XNNPACK threads, the model's own (fixed) batch size."""

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
        self._interpreter: Any = None
        self._input: dict[str, Any] = {}
        self._output: dict[str, Any] = {}

    def _activate(self) -> None:
        interpreter_type = import_interpreter()
        if self.model is None and not self.path.is_file():
            raise ModelFileError(f"{self.path}: LiteRT model not found")
        try:
            source = {"model_content": self.model} if self.model is not None else {"model_path": str(self.path)}
            with native_output_captured():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on fd 2
                self._interpreter = interpreter_type(**source, num_threads=self.threads or None)
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ModelFileError(f"{self.path}: LiteRT cannot load the model ({first_line(error)})") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]

    def _deactivate(self) -> None:
        self._interpreter = None

    @property
    def fixed_batch(self) -> int | None:
        shape = self._input.get("shape")
        return int(shape[0]) if shape is not None else 1

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        return {
            "runtime": "litert",
            "version": metadata.version("ai-edge-litert"),
            "providers": ["XNNPACK delegate (CPU)"],
            "threads": self.threads,
            "io": np.dtype(self._input["dtype"]).name if self._input else "unknown",
        }

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input["index"], quantize(batch, self._input))
        self._interpreter.invoke()
        return dequantize(self._interpreter.get_tensor(self._output["index"]), self._output)
