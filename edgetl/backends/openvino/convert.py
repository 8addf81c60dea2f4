"""ONNX -> OpenVINO IR, path in / path out: the same validated model, another runtime.

The fp32 IR comes from the exported fp32 ONNX and the int8 IR from the Q/DQ ONNX that the
optimize stage validated with its accuracy gate, so OpenVINO runs exactly the quantization edgetl
measured (OpenVINO's CPU plugin executes Q/DQ pairs as int8 kernels). Weights are kept in fp32:
`save_model` compresses them to fp16 by default, which would change the model without a
measurement saying it is harmless.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.errors import ModelFileError, first_line


def convert_onnx(source: Path, target: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Write `target` (.xml) and its `.bin` from the ONNX model `source`; return what was done."""
    import openvino as ov

    if not source.is_file():
        raise ModelFileError(f"{source}: ONNX model not found (convert needs the exported model)")
    try:
        model = ov.convert_model(str(source))
    except Exception as error:  # OpenVINO's frontend raises its own types
        raise ModelFileError(f"{source}: OpenVINO cannot read the model ({first_line(error)})") from None
    # The convert stage writes into a fresh folder that is committed as a whole, so no temp names here.
    target.parent.mkdir(parents=True, exist_ok=True)
    weights = target.with_suffix(".bin")
    ov.save_model(model, str(target), compress_to_fp16=False)
    return {
        "converter": f"openvino.convert_model + save_model (OpenVINO {ov.get_version().split('-')[0]})",
        "from": source.name,
        "compress_to_fp16": False,
        "files": [target.name, weights.name],
    }
