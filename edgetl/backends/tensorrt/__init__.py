"""TensorRT engines: build options, the build itself, the trtexec equivalent and the sidecar that guards loading.

    from edgetl.backends.tensorrt import EngineOptions, build_engine
    sidecar = build_engine("bundle/model.onnx", "bundle/model.engine", EngineOptions(precision="int8", max_batch=8))

Importing this package is cheap and needs neither TensorRT nor torch: tensorrt and pycuda are
imported by the functions that talk to the GPU, so options, sidecars and trtexec commands work on
any machine. Running an engine is `edgetl.backends.tensorrt.runner.TensorRTRunner`.
"""

from edgetl import layout
from edgetl.backends.base import Artifact, Backend
from edgetl.backends.tensorrt.build import build_engine, tensorrt_environment, trtexec_command
from edgetl.backends.tensorrt.options import HARDWARE_COMPATIBILITY, PRECISIONS, EngineOptions
from edgetl.backends.tensorrt.sidecar import (
    SIDECAR_SCHEMA,
    EngineSidecar,
    check_compatible,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)

# Engines are built by the package stage into the bundle (or on the device): one engine per run.
BACKEND = Backend(
    name="tensorrt",
    label="TensorRT GPU",
    artifacts=(
        Artifact("trt_fp16", "tensorrt", "fp16", "package", layout.ENGINE, "tensorrt", source="onnx_fp32"),
        Artifact("trt_int8", "tensorrt", "int8", "package", layout.ENGINE, "tensorrt", source="onnx_int8"),
    ),
    runner="edgetl.backends.tensorrt.runner:TensorRTRunner",
    requires=("tensorrt", "pycuda"),
    extra="tensorrt",
    host_memory=False,
    notes="device memory of TensorRT engines is not tracked",
)


def engine_artifact(precision: str) -> str:
    """The artefact name of an engine built at `precision` (trt_fp16, trt_int8)."""
    for item in BACKEND.artifacts:
        if item.precision == precision:
            return item.name
    raise ValueError(f"no TensorRT artefact for precision {precision!r}")


__all__ = [
    "BACKEND",
    "engine_artifact",
    "HARDWARE_COMPATIBILITY",
    "PRECISIONS",
    "SIDECAR_SCHEMA",
    "EngineOptions",
    "EngineSidecar",
    "build_engine",
    "check_compatible",
    "read_sidecar",
    "sidecar_path",
    "tensorrt_environment",
    "trtexec_command",
    "write_sidecar",
]
