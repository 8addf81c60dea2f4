"""OpenVINO runner: one compiled model on the CPU plugin, latency hint, fixed threads, fp32 inference precision.

The inference precision is pinned to f32: on CPUs with bf16 or fp16 units OpenVINO's default
silently runs float layers in reduced precision, which is a different model from the one measured
for accuracy (and was slower than fp32 on a Xeon with AVX-512 bf16, issue 13). Int8 comes from the
Q/DQ pairs in the IR, not from this hint.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.backends.base import Runner
from edgetl.errors import DependencyError, ModelFileError, first_line


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise DependencyError(
            "OpenVINO is not installed", hint="pip install 'edgetl[openvino]' (the openvino package)"
        ) from None
    return openvino


class OpenVINORunner(Runner):
    """`threads` inference threads, one stream, PERFORMANCE_HINT=LATENCY, on `device` (default CPU)."""

    loads_from_memory = True

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        threads: int | None = None,
        device: str = "CPU",
        verified: Mapping[Path, bytes] | None = None,
    ) -> None:
        self.path = Path(path)
        # Already-verified bytes of the .xml and its .bin: compiled from memory, the files are not reopened.
        self.verified = {key: (verified or {}).get(key) for key in (self.path, self.path.with_suffix(".bin"))}
        super().__init__(name or self.path.stem)
        self.threads = threads
        self.device = device
        self._compiled: Any = None
        self._request: Any = None
        self._fixed_batch: int | None = None
        self._version = ""

    def config(self) -> dict[str, Any]:
        """The compile properties, also recorded in the report and written into bundles."""
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    def _activate(self) -> None:
        ov = import_openvino()
        xml, weights = self.verified.values()
        in_memory = xml is not None and weights is not None
        if not in_memory and (not self.path.is_file() or not self.path.with_suffix(".bin").is_file()):
            raise ModelFileError(f"{self.path}: OpenVINO IR not found (the .xml and its .bin must sit together)")
        core = ov.Core()
        try:
            model = core.read_model(model=xml, weights=weights) if in_memory else str(self.path)
            self._compiled = core.compile_model(model, self.device, self.config())
        except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
            raise ModelFileError(f"{self.path}: OpenVINO cannot compile the model ({first_line(error)})") from None
        self._request = self._compiled.create_infer_request()
        shape = self._compiled.input(0).get_partial_shape()
        batch = shape[0]
        self._fixed_batch = batch.get_length() if batch.is_static else None
        self._version = ov.get_version().split("-")[0]

    def _deactivate(self) -> None:
        self._request = None
        self._compiled = None

    @property
    def fixed_batch(self) -> int | None:
        return self._fixed_batch

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": "openvino",
            "version": self._version or import_openvino().get_version().split("-")[0],
            "providers": [f"{self.device} plugin"],
            "threads": self.threads,
            "config": self.config(),
        }

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)
