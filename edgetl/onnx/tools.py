"""ONNX file helpers shared by export and optimize: metadata, checks, op census."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import onnx

from edgetl import __version__
from edgetl.errors import ModelFileError, VerificationError, first_line
from edgetl.files import atomic_path
from edgetl.layout import METADATA_LABELS, METADATA_PREPROCESSING
from edgetl.preprocessing import Preprocessing


def load_model(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as error:
        raise ModelFileError(f"{path}: not a readable ONNX file ({error.__class__.__name__})") from None


def embed_metadata(model: onnx.ModelProto, labels: list[str], pre: Preprocessing, **extra: str) -> None:
    """Labels and preprocessing go inside the model file, so it is self-describing on a device."""
    entries = {
        METADATA_LABELS: json.dumps(labels),
        METADATA_PREPROCESSING: json.dumps(pre.to_dict(), sort_keys=True),
        "edgetl.version": __version__,
        **extra,
    }
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    model.producer_name = "edgetl"
    model.producer_version = __version__


def check(model: onnx.ModelProto, what: str) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise VerificationError(f"{what}: onnx.checker rejected the model: {first_line(error)}") from None


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """One self-contained file (no external data), written atomically."""
    with atomic_path(path) as temp:
        onnx.save_model(model, str(temp), save_as_external_data=False)


def op_census(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(collections.Counter(node.op_type for node in model.graph.node).items()))


def opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def io_summary(model: onnx.ModelProto) -> dict[str, Any]:
    def shape(value: onnx.ValueInfoProto) -> list[int | str]:
        dims = value.type.tensor_type.shape.dim
        return [d.dim_param if d.dim_param else d.dim_value for d in dims]

    return {
        "inputs": {v.name: shape(v) for v in model.graph.input},
        "outputs": {v.name: shape(v) for v in model.graph.output},
    }


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The model's fixed batch size, or None when its (first) input's batch dimension is dynamic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].dim_value > 0 else None


def cpu_session(model: Any, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for a model (a ModelProto or a path), quiet unless it fails."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` that also returns the (float) tensors `names`, for measuring inside the graph."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    existing = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in existing:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            existing.add(name)
    return exposed
