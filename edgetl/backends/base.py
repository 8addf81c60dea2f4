"""What every backend is and can do: the runner base, an artefact's identity, and the backend record.

Polygraphy's shape: a runner is `activate / infer / deactivate`; what every runner can be asked
(how it runs, which batches it takes, whether it has its own timer, whether host memory tells its
footprint) is a method or property here with a sensible default, so measuring code asks the runner
instead of testing names. A `Backend` is the one registration of a runtime: its artefacts, how to
open a runner, which conversion produces its files, and what must be installed.

This module must not import torch or any runtime: it is what a device runs.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class Runner(ABC):
    """Runs a classification model on a preprocessed NCHW float32 batch and returns logits."""

    name: str
    # True when `timed_infer` uses the device's own clock (CUDA events) rather than the host's.
    has_device_timer: bool = False
    # True when the runner can load verified bytes (`verified=`) instead of reopening its files.
    loads_from_memory: bool = False

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

    @property
    def max_batch(self) -> int | None:
        """The largest batch the model takes (e.g. a TensorRT profile's max), or None for no limit."""
        return None

    def describe(self) -> dict[str, Any]:
        """How this runner executes, for the report: runtime, version, where it runs, threads."""
        return {"runtime": self.name, "version": "unknown", "providers": [], "threads": None}

    def timed_infer(self, batch: np.ndarray) -> float:
        """One inference in ms on the device's own timer; only called when `has_device_timer`."""
        raise NotImplementedError(f"{type(self).__name__} has no device timer")

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


@dataclass(frozen=True)
class Artifact:
    """One thing a build can produce and measure: its identity, where it lives, and where it comes from."""

    name: str  # e.g. "onnx_int8": the key in profiles, reports and manifests
    backend: str  # the backend whose runner executes it
    precision: str  # "fp32" | "fp16" | "int8"
    stage: str  # the stage that writes it
    file: str  # path in the run directory (for an IR with a weights file: the file a runner opens)
    format: str  # "pytorch" | "onnx" | "tensorrt" | "openvino-ir" ...
    source: str | None = None  # the artefact it is converted from (the same validated model, another runtime)
    companions: tuple[str, ...] = ()  # further files that belong to it (an IR's .bin)


Converter = Callable[[Path, Path, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Backend:
    """A runtime edgetl can produce artefacts for and measure; registered once in `edgetl.backends`."""

    name: str  # "onnxruntime", "openvino", ...
    label: str  # how the report names where it runs, e.g. "ONNX Runtime CPU"
    artifacts: tuple[Artifact, ...]
    runner: str  # "module:Class" of its Runner, imported when first needed
    requires: tuple[str, ...] = ()  # importable modules it needs
    extra: str | None = None  # the pip extra that installs them
    # "module:function" that writes a converted artefact: f(source_model, target_file, options) -> record;
    # options: "input_shape" (C, H, W), "precision" of the artefact, "calibration" (images) when it quantizes.
    converter: str | None = None
    # Host memory (peak RSS of a fresh process) tells this backend's footprint; False for GPU engines.
    host_memory: bool = True
    # What the converter needs beyond the runner (a converter too heavy for a device), and its extra.
    converter_requires: tuple[str, ...] = ()
    converter_extra: str | None = None
    # Distributions whose versions identify a build's artefacts (stage fingerprints, the report); default: name.
    packages: tuple[str, ...] = ()
    # What an app does with a shipped artefact of this runtime, when a target of another runtime ships it.
    on_device: tuple[str, ...] = ()
    notes: str = ""

    def unavailable(self) -> str | None:
        """Why this backend cannot run on this machine (a missing module, and how to install it), or None."""
        return _missing(self.requires, self.extra)

    def cannot_convert(self) -> str | None:
        """Why this machine cannot write this backend's artefacts (runner or converter missing), or None."""
        return self.unavailable() or _missing(self.converter_requires, self.converter_extra)

    @property
    def versioned_packages(self) -> tuple[str, ...]:
        return self.packages or (self.name,)

    def runner_class(self) -> type[Runner]:
        module, _, attribute = self.runner.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def make_runner(
        self, path: Path, name: str, threads: int | None, verified: Mapping[Path, bytes] | None = None
    ) -> Runner:
        """A runner for one of this backend's files (not activated: that is where the runtime loads).

        `verified`: the bytes of `path` (and its companions) as they were hashed; a runner that can load
        from memory runs exactly those, so a file swapped after the check changes nothing.
        """
        runner_type = self.runner_class()
        if verified and runner_type.loads_from_memory:
            return runner_type(path, name=name, threads=threads, verified=verified)  # type: ignore[call-arg]
        return runner_type(path, name=name, threads=threads)  # type: ignore[call-arg]

    def convert(self, source: Path, target: Path, options: dict[str, Any]) -> dict[str, Any]:
        if self.converter is None:
            raise RuntimeError(f"backend {self.name} converts nothing")
        from edgetl.console import native_output_captured

        module, _, attribute = self.converter.partition(":")
        with native_output_captured():  # converters' C++ logs bypass --quiet; shown only if the conversion fails
            return getattr(importlib.import_module(module), attribute)(source, target, options)


def _missing(modules: tuple[str, ...], extra: str | None) -> str | None:
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    install = f"pip install 'edgetl[{extra}]'" if extra else "see the targets guide: docs/guides/targets.md"
    return f"{', '.join(missing)} not installed ({install})"
