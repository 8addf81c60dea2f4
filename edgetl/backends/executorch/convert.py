"""PyTorch checkpoint -> ExecuTorch .pte lowered to XNNPACK: fp32, or int8 by PT2E on the calibration pool.

Path in / path out, like the other converters. `options["precision"]` says which program to write;
an int8 program is calibrated on `options["calibration"]`, the optimize stage's calibration pool
(train + holdout), never val. Static shapes at batch 1: XNNPACK plans its memory for them, and an
app runs one image at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgetl.console import native_log
from edgetl.errors import DependencyError, ModelFileError, first_line
from edgetl.machine import package_versions

_HINT = "pip install 'edgetl[executorch]' (executorch, with torchao for int8)"


def convert(source: Path, target: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Write `target` (.pte) from the checkpoint `source`, in `options["precision"]` (fp32 or int8)."""
    import torch

    from edgetl.backbones.base import out_of_place
    from edgetl.backbones.checkpoint import load_checkpoint

    if not source.is_file():
        raise ModelFileError(f"{source}: not found (the ExecuTorch conversion needs it)")
    precision = options["precision"]
    model = load_checkpoint(source).build_model()  # already in eval mode
    sample = (torch.zeros([1, *options["input_shape"]], dtype=torch.float32),)
    record: dict[str, Any] = {"from": source.name, "input": "float32 NCHW, batch 1"}
    try:
        with out_of_place(model):
            exported = torch.export.export(model, sample)
        if precision == "int8":
            exported, quantization = _quantize(exported, sample, options["calibration"])
            record.update(quantization)
        program = _lower(exported)
    except DependencyError:
        raise
    except Exception as error:  # export and lowering raise many types
        raise ModelFileError(f"{source}: ExecuTorch cannot convert the model ({first_line(error)})") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(program)
    partial.replace(target)
    versions = package_versions("executorch", "torchao")
    record["converter"] = (
        f"torch.export -> to_edge_transform_and_lower(XnnpackPartitioner) (executorch {versions['executorch']}"
        + (f", torchao {versions['torchao']})" if precision == "int8" else ")")
    )
    record["files"] = [target.name]
    return record


def _quantize(exported: Any, sample: tuple[Any, ...], calibration: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """PT2E static int8: symmetric per-channel weights, per-tensor activations, observers run on the pool."""
    import torch

    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        raise DependencyError("executorch / torchao are not installed", hint=_HINT) from None
    if len(calibration) == 0:
        raise ModelFileError("no calibration images for the ExecuTorch int8 program")
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(exported.module(), quantizer)
    with torch.no_grad():
        for index in range(len(calibration)):  # the graph is specialised to batch 1
            prepared(torch.from_numpy(np.ascontiguousarray(calibration[index : index + 1], dtype=np.float32)))
    quantized = convert_pt2e(prepared)
    return torch.export.export(quantized, sample), {
        "calibration_images": int(len(calibration)),
        "quantization": "PT2E XNNPACKQuantizer: int8 symmetric per-channel weights, static int8 activations",
    }


def _lower(exported: Any) -> bytes:
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise DependencyError("executorch is not installed", hint=_HINT) from None
    with native_log():
        lowered = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        return bytes(lowered.to_executorch().buffer)
