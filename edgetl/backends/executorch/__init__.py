"""ExecuTorch (PyTorch's own edge runtime; Android, iOS, Linux arm64, MCUs): .pte programs lowered to XNNPACK.

Both programs come from the fine-tuned checkpoint through `torch.export`: fp32 as it is, int8 by
PT2E post-training quantization with ExecuTorch's XNNPACKQuantizer (int8 weights per channel,
static int8 activations) calibrated on the same calibration images as the ONNX int8 model, never
val. One package, `executorch`, both writes and runs them; a device app links the C++/Java/Swift
runtime instead (see the bundle README).
"""

from __future__ import annotations

from edgetl import layout
from edgetl.backends.base import Artifact, Backend

BACKEND = Backend(
    name="executorch",
    label="ExecuTorch CPU (XNNPACK)",
    artifacts=(
        Artifact(
            "executorch_fp32",
            "executorch",
            "fp32",
            "convert",
            f"{layout.EXECUTORCH_DIR}/model_fp32.pte",
            "executorch",
            source="torch_fp32",
        ),
        Artifact(
            "executorch_int8",
            "executorch",
            "int8",
            "convert",
            f"{layout.EXECUTORCH_DIR}/model_int8.pte",
            "executorch",
            source="torch_fp32",
        ),
    ),
    runner="edgetl.backends.executorch.runner:ExecuTorchRunner",
    requires=("executorch", "torch"),
    extra="executorch",
    converter="edgetl.backends.executorch.convert:convert",
    converter_requires=("torchao",),
    converter_extra="executorch",
    packages=("executorch", "torch", "torchao"),
    on_device=(
        "copy the bundle's model.pte, labels.txt and preprocessing.json into the app "
        "(Android: org.pytorch.executorch Module.load; iOS: the ExecuTorch Swift package; C++: "
        "executorch::extension::Module, linked with the XNNPACK backend)",
        "resize/crop/normalise as preprocessing.json says; the program takes float32 NCHW at batch 1 and "
        "returns float32 logits (int8 stays inside the XNNPACK delegate)",
        "on arm64 Linux: pip install 'edgetl[executorch]' && edgetl predict BUNDLE_DIR image.jpg",
    ),
)
