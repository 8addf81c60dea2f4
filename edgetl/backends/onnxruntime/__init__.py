"""ONNX Runtime: the fp32 export, the fp16 model and the validated Q/DQ int8 model, on the CPU provider."""

from __future__ import annotations

from edgetl import layout
from edgetl.backends.base import Artifact, Backend

BACKEND = Backend(
    name="onnxruntime",
    label="ONNX Runtime CPU",
    artifacts=(
        Artifact("onnx_fp32", "onnxruntime", "fp32", "export", layout.ONNX_FP32, "onnx"),
        Artifact("onnx_fp16", "onnxruntime", "fp16", "optimize", layout.ONNX_FP16, "onnx", source="onnx_fp32"),
        Artifact("onnx_int8", "onnxruntime", "int8", "optimize", layout.ONNX_INT8, "onnx", source="onnx_fp32"),
    ),
    runner="edgetl.backends.onnxruntime.runner:OnnxRuntimeRunner",
    requires=("onnxruntime",),
)
