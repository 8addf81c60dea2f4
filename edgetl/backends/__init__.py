"""The backend catalogue: every runtime edgetl produces artefacts for, and every artefact by name.

    from edgetl.backends import artifact, backend_for
    backend_for("onnx_int8").make_runner(path, "onnx_int8", threads=1)

One folder per backend (`edgetl/backends/<name>/`: its record in `__init__`, its runner, its
converter); adding a runtime is that folder plus one line in `_BACKENDS` below. Importing the
catalogue imports no runtime: runners and converters are imported when first used.
"""

from __future__ import annotations

from edgetl.backends import executorch, litert, onnxruntime, openvino, pytorch, tensorrt
from edgetl.backends.base import Artifact, Backend, Runner
from edgetl.errors import UserInputError, unknown_name_message

_BACKENDS: tuple[Backend, ...] = (
    pytorch.BACKEND,
    onnxruntime.BACKEND,
    tensorrt.BACKEND,
    openvino.BACKEND,
    litert.BACKEND,
    executorch.BACKEND,
)

BACKENDS: dict[str, Backend] = {backend.name: backend for backend in _BACKENDS}
ARTIFACTS: dict[str, Artifact] = {a.name: a for backend in _BACKENDS for a in backend.artifacts}


def artifact_names() -> list[str]:
    return list(ARTIFACTS)


def unknown_artifact_message(name: str) -> str:
    return unknown_name_message("artefact", name, ARTIFACTS)


def artifact(name: str) -> Artifact:
    try:
        return ARTIFACTS[name]
    except KeyError:
        raise UserInputError(unknown_artifact_message(name)) from None


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise UserInputError(unknown_name_message("runtime", name, BACKENDS)) from None


def backend_for(artifact_name: str) -> Backend:
    return BACKENDS[artifact(artifact_name).backend]


def quantizes(name: str) -> bool:
    """True when making this artefact quantizes (int8 from a float source): it needs int8 on and calibration images."""
    item = artifact(name)
    return item.precision == "int8" and item.source is not None and ARTIFACTS[item.source].precision != "int8"


def converted_runtimes() -> list[str]:
    """Runtimes the convert stage can produce artefacts for (besides ONNX Runtime's own models)."""
    return [b.name for b in _BACKENDS if b.converter is not None]


__all__ = [
    "ARTIFACTS",
    "BACKENDS",
    "Artifact",
    "Backend",
    "Runner",
    "artifact",
    "artifact_names",
    "backend_for",
    "converted_runtimes",
    "get_backend",
    "quantizes",
    "unknown_artifact_message",
]
