"""Preprocessing inside the model: an ONNX that takes decoded uint8 RGB pixels instead of a float tensor.

A client then only decodes the image (orientation and colour policy as `preprocessing.json` says)
and hands the pixels over; resize, crop and normalisation are ONNX ops in front of the network, so
they cannot drift from the model. Two forms:

- `any_size`: input `pixels` uint8 [1, height, width, 3], any size. The graph resizes the shorter
  side to `resize` (Resize, opset 18, `antialias=1` on uint8, like PIL), center-crops with the
  contract's half-to-even offsets and normalises in float32. ONNX Runtime's antialiased resize is
  not PIL's bit for bit (a few values in a thousand differ, by up to a few levels), so its agreement
  with the PIL path is measured, not assumed.
- `crop_size`: input `pixels` uint8 [N, crop, crop, 3], already resized and cropped by the client;
  the graph only normalises. Given PIL's crop it is exact.

Normalisation stays three float32 ops (/255, -mean, /std) in the contract's order rather than folded
into the stem convolution: the supported backbones pad their stem convolution with zeros, and a zero
in normalised space is not a zero pixel, so folding would change the border outputs. The ops add
well under a millisecond; the package stage measures what the whole form adds.
Path in, path out: `add_preprocessing(model.onnx, model_pixels.onnx, pre, "any_size")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgetl import layout
from edgetl.errors import UserInputError
from edgetl.onnx import tools as onnx_tools
from edgetl.preprocessing import Preprocessing

PixelsForm = Literal["any_size", "crop_size"]
PIXELS_FORMS: tuple[str, ...] = ("any_size", "crop_size")
PIXELS_INPUT = "pixels"
METADATA_INPUT = "edgetl.input"
_RESIZE_OPSET = 18  # Resize's `antialias` attribute


def describe_input(form: PixelsForm, pre: Preprocessing) -> str:
    """What the pixels model takes, in one sentence (bundle.json, README, ONNX metadata)."""
    if form == "any_size":
        return (
            f"`{PIXELS_INPUT}` uint8 [1, height, width, 3]: decoded RGB pixels of any size (after EXIF orientation "
            "and colour management as preprocessing.json says); resize, crop and normalisation are in the model"
        )
    return (
        f"`{PIXELS_INPUT}` uint8 [N, {pre.crop}, {pre.crop}, 3]: RGB pixels already resized and center-cropped as "
        "preprocessing.json says; normalisation is in the model"
    )


def preprocessing_graph(
    pre: Preprocessing, form: PixelsForm, opset: int, output: str, batch: int | str = "batch"
) -> Any:
    """The preprocessing alone, as an ONNX model from `pixels` to `output` (float32 NCHW).

    `batch` is the crop_size form's batch dimension: the network's own (a fixed export keeps its size).
    """
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: np.ndarray) -> Any:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))

    nodes: list[Any] = []
    if form == "any_size":
        shape_in = [1, "height", "width", 3]
        interpolation = {"bilinear": ("linear", {}), "bicubic": ("cubic", {"cubic_coeff_a": -0.5})}
        if pre.interpolation not in interpolation:
            raise UserInputError(
                f"in-graph preprocessing: {pre.interpolation} resize is not offered (bilinear, bicubic)"
            )
        mode, extra = interpolation[pre.interpolation]
        i64 = np.int64
        nodes += [
            helper.make_node("Transpose", [PIXELS_INPUT], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Shape", ["nchw"], ["shape"]),
            const("idx_hw", np.array([2, 3], i64)),
            const("idx_nc", np.array([0, 1], i64)),
            helper.make_node("Gather", ["shape", "idx_hw"], ["hw"]),
            helper.make_node("Gather", ["shape", "idx_nc"], ["nc"]),
            helper.make_node("ReduceMin", ["hw"], ["short"], keepdims=1),
            const("target", np.array([pre.resize], i64)),
            # new side = floor(resize * side / short): the contract's rounding (int64 division of positives)
            helper.make_node("Mul", ["hw", "target"], ["hw_scaled"]),
            helper.make_node("Div", ["hw_scaled", "short"], ["new_hw"]),
            helper.make_node("Concat", ["nc", "new_hw"], ["sizes"], axis=0),
            helper.make_node(
                "Resize",
                ["nchw", "", "", "sizes"],
                ["resized"],
                mode=mode,
                antialias=1,
                coordinate_transformation_mode="half_pixel",
                **extra,
            ),
            # offset = round_half_to_even((new - crop) / 2) = q + (d mod 2) * (q mod 2), q = d // 2
            const("crop", np.array([pre.crop, pre.crop], i64)),
            const("two", np.array([2, 2], i64)),
            helper.make_node("Sub", ["new_hw", "crop"], ["spare"]),
            helper.make_node("Div", ["spare", "two"], ["half"]),
            helper.make_node("Mod", ["spare", "two"], ["odd"]),
            helper.make_node("Mod", ["half", "two"], ["half_odd"]),
            helper.make_node("Mul", ["odd", "half_odd"], ["bump"]),
            helper.make_node("Add", ["half", "bump"], ["start"]),
            helper.make_node("Add", ["start", "crop"], ["end"]),
            const("axes_hw", np.array([2, 3], i64)),
            helper.make_node("Slice", ["resized", "start", "end", "axes_hw"], ["cropped"]),
            helper.make_node("Cast", ["cropped"], ["as_float"], to=TensorProto.FLOAT),
        ]
    else:
        shape_in = [batch, pre.crop, pre.crop, 3]
        nodes += [
            helper.make_node("Transpose", [PIXELS_INPUT], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Cast", ["nchw"], ["as_float"], to=TensorProto.FLOAT),
        ]
    f32 = np.float32
    nodes += [
        const("scale", np.array(255.0, f32)),
        const("mean", np.asarray(pre.mean, f32).reshape(1, 3, 1, 1)),
        const("std", np.asarray(pre.std, f32).reshape(1, 3, 1, 1)),
        helper.make_node("Div", ["as_float", "scale"], ["unit"]),
        helper.make_node("Sub", ["unit", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], [output]),
    ]
    keep = {PIXELS_INPUT, output, ""}
    for node in nodes:  # the network's own tensor names (e.g. "mean") must not collide with these
        node.input[:] = [name if name in keep else f"edgetl_pre/{name}" for name in node.input]
        node.output[:] = [name if name in keep else f"edgetl_pre/{name}" for name in node.output]
    graph = helper.make_graph(
        nodes,
        "edgetl_preprocessing",
        [helper.make_tensor_value_info(PIXELS_INPUT, TensorProto.UINT8, shape_in)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def add_preprocessing(model_in: Path, model_out: Path, pre: Preprocessing, form: PixelsForm) -> dict[str, Any]:
    """Write `model_out`: `model_in` with the preprocessing in front of its `input`. Returns what was done."""
    import onnx
    from onnx import compose

    if form not in PIXELS_FORMS:
        raise UserInputError(f"in-graph preprocessing form {form!r}: expected one of {', '.join(PIXELS_FORMS)}")
    model = onnx.load(str(model_in))
    reason = form_unavailable(model, form)
    if reason is not None:
        raise UserInputError(f"{model_in}: {reason}")
    inputs = [i.name for i in model.graph.input]
    if inputs != [layout.INPUT_NAME]:
        raise UserInputError(f"{model_in}: expected one input {layout.INPUT_NAME!r}, found {inputs}")
    opset = onnx_tools.opset(model)
    batch = onnx_tools.fixed_batch(model)
    front = preprocessing_graph(pre, form, opset, "edgetl_preprocessed", batch=batch or "batch")
    front.ir_version = model.ir_version
    for entry in model.opset_import:  # merge_models wants the same imports on both sides
        if entry.domain not in ("", "ai.onnx"):
            front.opset_import.append(entry)
    merged = compose.merge_models(front, model, io_map=[("edgetl_preprocessed", layout.INPUT_NAME)])
    del merged.metadata_props[:]
    for prop in model.metadata_props:
        merged.metadata_props.add(key=prop.key, value=prop.value)
    merged.metadata_props.add(key=METADATA_INPUT, value=describe_input(form, pre))
    onnx.checker.check_model(merged)
    model_out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(merged, str(model_out))
    return {"form": form, "input": describe_input(form, pre), "opset": opset, "normalisation": "ops (not folded)"}


def form_unavailable(model: Any, form: PixelsForm) -> str | None:
    """Why `form` cannot be put in front of this ONNX model, or None when it can."""
    if form != "any_size":
        return None
    opset = onnx_tools.opset(model)
    if opset < _RESIZE_OPSET:
        return (
            f"the shipped ONNX has opset {opset}; in-graph resizing needs {_RESIZE_OPSET} (antialiased Resize): "
            "set package.pixels_model: crop_size"
        )
    batch = onnx_tools.fixed_batch(model)
    if batch not in (None, 1):
        return (
            f"the shipped ONNX takes a fixed batch of {batch}; the any_size pixels model takes one image of any size "
            "at a time (set package.pixels_model: crop_size, or export.batch_size: 1 or dynamic)"
        )
    return None


def pixels_batch(pre: Preprocessing, path: Path, form: PixelsForm) -> np.ndarray:
    """What a client hands the pixels model for one image file: decoded pixels, cropped for crop_size."""
    image = pre.decode(path)
    if form == "crop_size":
        image = pre.resize_and_crop(image)
    return np.asarray(image, dtype=np.uint8)[None]
