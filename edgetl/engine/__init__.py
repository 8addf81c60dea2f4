"""TensorRT engines: build options, the build itself, the trtexec equivalent and the sidecar that guards loading.

    from edgetl.engine import EngineOptions, build_engine
    sidecar = build_engine("bundle/model.onnx", "bundle/model.engine", EngineOptions(precision="int8", max_batch=8))

Importing this package is cheap and needs neither TensorRT nor torch: tensorrt and pycuda are
imported by the functions that talk to the GPU, so options, sidecars and trtexec commands work on
any machine. Running an engine is `edgetl.runtime.tensorrt.TensorRTRunner`.
"""

from edgetl.engine.build import build_engine, tensorrt_environment, trtexec_command
from edgetl.engine.options import HARDWARE_COMPATIBILITY, PRECISIONS, EngineOptions
from edgetl.engine.sidecar import (
    SIDECAR_SCHEMA,
    EngineSidecar,
    check_compatible,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)

__all__ = [
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
