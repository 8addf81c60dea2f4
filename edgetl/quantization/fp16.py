"""fp16 ONNX for GPU targets (TensorRT, CUDA EP): weights and compute in half precision, fp32 I/O.

Inputs and outputs stay float32 (`keep_io_types`), so the runtime's preprocessing and callers do
not change. On CPUs ONNX Runtime runs many fp16 ops through casts: the file is half the size and
its accuracy is measured on val like every artefact, but CPU latency says nothing about a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.files import atomic_path


def convert_to_fp16(source: Path, target: Path) -> dict[str, Any]:
    """Path in, path out; returns what was done, for the record."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    # Softmax-like and normalisation ops overflow in fp16 more easily; this model family has none
    # in its body, but keep the list explicit so a new backbone cannot change it silently.
    blocked = ["Resize", "Range", "RandomNormalLike", "NonMaxSuppression", "TopK"]
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    kept = [entry for entry in half.metadata_props if entry.key != "edgetl.precision"]
    del half.metadata_props[:]
    half.metadata_props.extend([*kept, onnx.StringStringEntryProto(key="edgetl.precision", value="fp16")])
    with atomic_path(target) as temp:
        onnx.save_model(half, str(temp), save_as_external_data=False)
    return {"keep_io_types": True, "op_block_list": blocked, "converter": "onnxruntime.transformers.float16"}
