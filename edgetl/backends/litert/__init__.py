"""LiteRT (formerly TensorFlow Lite; Android, Linux arm64, MCUs): .tflite fp32 and full-integer int8.

The fp32 model is converted from the fine-tuned checkpoint by litert-torch (no TensorFlow); the
int8 model is the fp32 .tflite quantized by ai-edge-quantizer (static int8 weights and activations,
int8 input and output) on the same calibration images the ONNX int8 model used, never val.
Why this pair was picked over litert-torch's PT2E int8 is measured in the README (issue 13).
"""

from __future__ import annotations

from edgetl import layout
from edgetl.backends.base import Artifact, Backend

BACKEND = Backend(
    name="litert",
    label="LiteRT CPU (XNNPACK)",
    artifacts=(
        Artifact(
            "litert_fp32",
            "litert",
            "fp32",
            "convert",
            f"{layout.LITERT_DIR}/model_fp32.tflite",
            "tflite",
            source="torch_fp32",
        ),
        Artifact(
            "litert_int8",
            "litert",
            "int8",
            "convert",
            f"{layout.LITERT_DIR}/model_int8.tflite",
            "tflite",
            source="litert_fp32",
        ),
    ),
    runner="edgetl.backends.litert.runner:LiteRTRunner",
    requires=("ai_edge_litert",),
    extra="litert",
    converter="edgetl.backends.litert.convert:convert",
    converter_requires=("litert_torch", "ai_edge_quantizer"),
    converter_extra="litert-convert",
    packages=("ai-edge-litert", "litert-torch", "ai-edge-quantizer"),
)
