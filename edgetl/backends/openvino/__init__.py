"""OpenVINO (Intel CPUs, iGPUs, NPUs): IR converted from the same fp32 and validated Q/DQ int8 ONNX models."""

from __future__ import annotations

from edgetl import layout
from edgetl.backends.base import Artifact, Backend

BACKEND = Backend(
    name="openvino",
    label="OpenVINO CPU",
    artifacts=(
        Artifact(
            "openvino_fp32",
            "openvino",
            "fp32",
            "convert",
            f"{layout.OPENVINO_DIR}/model_fp32.xml",
            "openvino-ir",
            source="onnx_fp32",
            companions=(f"{layout.OPENVINO_DIR}/model_fp32.bin",),
        ),
        Artifact(
            "openvino_int8",
            "openvino",
            "int8",
            "convert",
            f"{layout.OPENVINO_DIR}/model_int8.xml",
            "openvino-ir",
            source="onnx_int8",
            companions=(f"{layout.OPENVINO_DIR}/model_int8.bin",),
        ),
    ),
    runner="edgetl.backends.openvino.runner:OpenVINORunner",
    requires=("openvino",),
    extra="openvino",
    converter="edgetl.backends.openvino.convert:convert_onnx",
)
