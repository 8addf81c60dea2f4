"""AdaRound (Nagel et al., 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"): path in, path out.

Rounding every weight to its nearest int8 level is what plain PTQ does, and it is not the best
choice for the layer's *output*: the rounding errors of one filter add up over its inputs. AdaRound
learns, per weight, whether to round down or up so that the quantized conv reproduces the fp32
conv's output on calibration images (train, never val), with a regulariser that drives every
choice to 0 or 1.

How it fits edgetl's quantizer: the chosen levels are written back into the fp32 model as the
dequantized values `scale * (q - zero_point)`, with each channel's smallest and largest weight left
untouched so that ONNX Runtime recomputes exactly the same per-channel scales. Quantizing that model
with the same ranges then lands every weight on AdaRound's level (checked: `mismatched_weights`),
so the bias correction, the accuracy-aware fallback and the price limit work on it unchanged.

Like bias correction it is sequential in graph order: each conv is fitted to what it reads in the
int8 model with every earlier conv already re-rounded (the asymmetric reconstruction of the paper),
against the fp32 model's output, after the conv's ReLU/ReLU6 (errors the activation clips away do
not count). A conv keeps AdaRound's levels only if they reconstruct its output better than nearest
rounding on every calibration image.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.onnx.tools import cpu_session, with_outputs
from edgetl.quantization.calibration import CalibrationResult
from edgetl.quantization.qdq import QuantSettings, quantize_with_ranges, quantized_compute_nodes

# The rectified sigmoid's stretch (the paper's zeta and gamma) and the regulariser's schedule.
_ZETA, _GAMMA = 1.1, -0.1
_BETA_START, _BETA_END = 20.0, 2.0
_WARMUP = 0.2  # share of the iterations without the rounding regulariser
_REG_WEIGHT = 0.01


@dataclass(frozen=True)
class AdaRoundSettings:
    """Optimisation budget per conv: AIMET's default is 10,000 iterations of 32 images on a GPU;
    a few hundred iterations on windows of 16 images is what 2 CPU cores pay for in a build."""

    iterations: int = 300
    batch_images: int = 16
    crop: int = 16  # output window per step (see _crop_sampler)
    learning_rate: float = 1e-2
    seed: int = 0


@dataclass(frozen=True)
class _WeightQuant:
    """A quantized conv weight in the QDQ model: the int8 initializer and its per-channel grid."""

    values: Any  # onnx TensorProto (int8/uint8), edited in place
    scale: np.ndarray  # (out_channels,) or scalar
    zero_point: np.ndarray
    qmin: int
    qmax: int

    def per_channel(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(scale, zero point) shaped to broadcast over a weight of `shape` (output channels first)."""
        channels = (-1,) + (1,) * (len(shape) - 1)
        return (
            np.broadcast_to(self.scale, shape[:1]).reshape(channels),
            np.broadcast_to(self.zero_point, shape[:1]).reshape(channels),
        )


def channel_extremes(weight: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(rows, [argmax, argmin]) of each output channel's flattened weights: the two values that set its scale."""
    flat = weight.reshape(len(weight), -1)
    return np.arange(len(weight)), [flat.argmax(1), flat.argmin(1)]


def _initializer_or_constant(model: Any, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _activation(model: Any, tensor: str) -> tuple[float | None, float | None]:
    """(min, max) of the Relu/Clip that alone reads `tensor` in `model`, or (None, None)."""
    consumers = [node for node in model.graph.node if tensor in node.input]
    if len(consumers) != 1:
        return None, None
    node = consumers[0]
    if node.op_type == "Relu":
        return 0.0, None
    if node.op_type != "Clip":
        return None, None
    bounds = [
        _initializer_or_constant(model, name) if name else None for name in (list(node.input[1:3]) + ["", ""])[:2]
    ]
    return tuple(None if b is None else float(b) for b in bounds)  # type: ignore[return-value]


def _weight_quant(model: Any, conv: Any, settings: QuantSettings) -> _WeightQuant | None:
    """The int8 weight behind `conv`'s DequantizeLinear, or None if its weight is not a quantized initializer."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    producer = next((n for n in model.graph.node if conv.input[1] in n.output), None)
    if producer is None or producer.op_type != "DequantizeLinear" or producer.input[0] not in initializers:
        return None
    values = initializers[producer.input[0]]
    scale = numpy_helper.to_array(initializers[producer.input[1]]).astype(np.float64)
    zero = (
        numpy_helper.to_array(initializers[producer.input[2]]).astype(np.float64)
        if len(producer.input) > 2 and producer.input[2] in initializers
        else np.zeros_like(scale)
    )
    info = np.iinfo(numpy_helper.to_array(values).dtype)
    qmin, qmax = int(info.min), int(info.max)
    if settings.reduce_range and info.bits == 8:  # 7-bit weights: ONNX Runtime's reduce_range grid
        qmin, qmax = (-64, 64) if info.min < 0 else (0, 127)
    return _WeightQuant(values, scale, zero, qmin, qmax)


def _conv_args(conv: Any) -> dict[str, Any] | None:
    """torch conv2d arguments for an ONNX Conv, or None where this module does not handle it (not 2-D, auto_pad)."""
    attrs = {a.name: a for a in conv.attribute}
    if "auto_pad" in attrs and attrs["auto_pad"].s not in (b"", b"NOTSET"):
        return None
    kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else None
    if kernel is not None and len(kernel) != 2:
        return None
    pads = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
    return {
        "stride": tuple(attrs["strides"].ints) if "strides" in attrs else (1, 1),
        "dilation": tuple(attrs["dilations"].ints) if "dilations" in attrs else (1, 1),
        "groups": attrs["group"].i if "group" in attrs else 1,
        "pad": (pads[1], pads[3], pads[0], pads[2]),  # torch F.pad order: left, right, top, bottom
    }


def _gather(session: Any, output: str, batches: list[np.ndarray]) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run([output], {name: batch})[0] for batch in batches]).astype(np.float32)


def _rectified_sigmoid(v: Any) -> Any:
    import torch

    return torch.clamp(torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)


def _crop_sampler(
    x_padded: Any, y: Any, kernel: tuple[int, ...], conv: dict[str, Any], settings: AdaRoundSettings
) -> Callable[[], tuple[Any, Any]]:
    """Random (inputs, target) pairs: `batch_images` images, one output window of at most `crop` x `crop`.

    A window of the output needs only its receptive field of the (padded) input, so early layers at
    112 x 112 cost what late ones at 7 x 7 do, and more images fit in one step.
    """
    import torch

    generator = torch.Generator().manual_seed(settings.seed)
    (kh, kw), (sh, sw), (dh, dw) = kernel, conv["stride"], conv["dilation"]
    out_h, out_w = y.shape[2:]
    oh, ow = min(settings.crop, out_h), min(settings.crop, out_w)

    def sample() -> tuple[Any, Any]:
        pick = torch.randint(0, len(y), (min(settings.batch_images, len(y)),), generator=generator)
        oy = int(torch.randint(0, out_h - oh + 1, (1,), generator=generator))
        ox = int(torch.randint(0, out_w - ow + 1, (1,), generator=generator))
        ih, iw = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
        x = x_padded[pick, :, oy * sh : oy * sh + ih, ox * sw : ox * sw + iw]
        return x, y[pick, :, oy : oy + oh, ox : ox + ow]

    return sample


def optimize_rounding(
    inputs: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    grid: _WeightQuant,
    conv: dict[str, Any],
    activation: tuple[float | None, float | None],
    settings: AdaRoundSettings,
) -> tuple[np.ndarray, float, float]:
    """Integer levels for `weight` that reproduce `target` from `inputs`; returns (levels, nearest mse, adaround mse).

    Levels are `q - zero_point`. The mse figures are over every input image, after the activation.
    """
    import torch
    import torch.nn.functional as F

    scale, zero = (torch.from_numpy(a.astype(np.float32)) for a in grid.per_channel(weight.shape))
    w = torch.from_numpy(weight.astype(np.float32))
    b = None if bias is None else torch.from_numpy(bias.astype(np.float32))
    low, high = grid.qmin - zero, grid.qmax - zero
    ratio = w / scale
    floor = torch.floor(ratio)
    nearest = torch.clamp(torch.round(ratio), low, high)
    fraction = (ratio - floor).clamp(1e-4, 1 - 1e-4)
    p = ((fraction - _GAMMA) / (_ZETA - _GAMMA)).clamp(1e-4, 1 - 1e-4)
    v = torch.log(p / (1 - p)).requires_grad_(True)  # h(v) starts at the weight's own fraction
    lo_act, hi_act = activation

    def activate(out: torch.Tensor) -> torch.Tensor:
        return out if lo_act is None and hi_act is None else torch.clamp(out, lo_act, hi_act)

    def forward(x: torch.Tensor, levels: torch.Tensor, padded: bool = False) -> torch.Tensor:
        x = x if padded else F.pad(x, conv["pad"])
        return activate(F.conv2d(x, levels * scale, b, conv["stride"], 0, conv["dilation"], conv["groups"]))

    x_padded, y_all = F.pad(torch.from_numpy(inputs), conv["pad"]), activate(torch.from_numpy(target))
    sample = _crop_sampler(x_padded, y_all, weight.shape[2:], conv, settings)
    optimizer = torch.optim.Adam([v], lr=settings.learning_rate)
    warm = int(settings.iterations * _WARMUP)
    for step in range(settings.iterations):
        x, y = sample()
        h = _rectified_sigmoid(v)
        levels = torch.clamp(floor + h, low, high)
        # BRECQ's reconstruction loss: squared error summed over channels, mean over positions and images.
        loss = (forward(x, levels, padded=True) - y).pow(2).sum(1).mean()
        if step >= warm:
            progress = (step - warm) / max(1, settings.iterations - warm)
            beta = _BETA_END + (_BETA_START - _BETA_END) * (1 - progress)
            loss = loss + _REG_WEIGHT * (1 - (2 * h - 1).abs().pow(beta)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x_all = torch.from_numpy(inputs)
    with torch.no_grad():
        chosen = torch.clamp(floor + (_rectified_sigmoid(v) >= 0.5).float(), low, high)
        # The smallest and largest weight of each channel set its scale: they keep nearest rounding.
        flat_chosen, flat_nearest = chosen.reshape(len(w), -1), nearest.reshape(len(w), -1)
        rows, extremes = channel_extremes(weight)
        for index in extremes:
            flat_chosen[rows, index] = flat_nearest[rows, index]
        mse = []
        for levels in (nearest, chosen):
            errors = [
                float(F.mse_loss(forward(x_all[i : i + 16], levels), y_all[i : i + 16], reduction="sum"))
                for i in range(0, len(x_all), 16)
            ]
            mse.append(sum(errors) / y_all.numel())
    return chosen.numpy(), mse[0], mse[1]


def adaround(
    prepared: Path,
    target_fp32: Path,
    ranges: CalibrationResult,
    settings: QuantSettings,
    float_nodes: list[str],
    batches: list[np.ndarray],
    work: Path,
    options: AdaRoundSettings = AdaRoundSettings(),
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Write `target_fp32`: `prepared` with every quantized 2-D conv's weights on AdaRound's int8 levels.

    Quantize `target_fp32` with the same ranges and float nodes to get the AdaRound int8 model.
    Returns what was done per conv (reconstruction mse, nearest vs adaptive).
    """
    import onnx
    from onnx import numpy_helper

    started = time.perf_counter()
    fp32_model = onnx.load(str(prepared))
    quantized_path = work / "adaround_int8.onnx"
    quantize_with_ranges(prepared, quantized_path, ranges, settings, float_nodes, {"input": batches[0][:1]})
    quantized = onnx.load(str(quantized_path))
    q_nodes = {n.name: n for n in quantized.graph.node}
    fp32_nodes = {n.name: n for n in fp32_model.graph.node}
    fp32_inits = {init.name: init for init in fp32_model.graph.initializer}
    users = Counter(name for node in fp32_model.graph.node for name in node.input)
    compute = [fp32_nodes[n].output[0] for n in quantized_compute_nodes(quantized) if n in fp32_nodes]
    reference = cpu_session(with_outputs(fp32_model, compute))
    layers: list[dict[str, Any]] = []
    for name in quantized_compute_nodes(quantized):  # graph order: every earlier conv is already re-rounded
        conv, fp32_conv = q_nodes[name], fp32_nodes.get(name)
        args = _conv_args(conv) if conv.op_type == "Conv" else None
        grid = _weight_quant(quantized, conv, settings)
        if fp32_conv is None or args is None or grid is None or users[fp32_conv.input[1]] != 1:
            continue
        weight = numpy_helper.to_array(fp32_inits[fp32_conv.input[1]])
        bias = numpy_helper.to_array(fp32_inits[fp32_conv.input[2]]) if len(fp32_conv.input) > 2 else None
        inputs = _gather(cpu_session(with_outputs(quantized, [conv.input[0]])), conv.input[0], batches)
        target = _gather(reference, fp32_conv.output[0], batches)
        levels, nearest_mse, adaptive_mse = optimize_rounding(
            inputs, target, weight, bias, grid, args, _activation(fp32_model, fp32_conv.output[0]), options
        )
        used = adaptive_mse < nearest_mse
        layers.append({"node": name, "nearest_mse": nearest_mse, "adaround_mse": adaptive_mse, "used": used})
        if not used:
            continue
        scale, zero = grid.per_channel(weight.shape)
        dtype = numpy_helper.to_array(grid.values).dtype
        grid.values.CopyFrom(numpy_helper.from_array((levels + zero).astype(dtype), grid.values.name))
        # Each channel's extremes keep their exact fp32 value, so ONNX Runtime recomputes the same scale.
        snapped = (levels * scale).astype(np.float32)
        rows, extremes = channel_extremes(weight)
        for index in extremes:
            snapped.reshape(len(weight), -1)[rows, index] = weight.reshape(len(weight), -1)[rows, index]
        fp32_inits[fp32_conv.input[1]].CopyFrom(numpy_helper.from_array(snapped, fp32_conv.input[1]))
    onnx.save(fp32_model, str(target_fp32))
    onnx.save(quantized, str(quantized_path))  # the levels as chosen (what quantizing `target_fp32` must give)
    used = [layer for layer in layers if layer["used"]]
    gains = [layer["nearest_mse"] / max(layer["adaround_mse"], 1e-20) for layer in used]
    record = {
        "convs": len(layers),
        "used": len(used),
        "images": int(sum(len(b) for b in batches)),
        "iterations": options.iterations,
        "batch_images": options.batch_images,
        "median_mse_ratio": float(np.median(gains)) if gains else 1.0,
        "seconds": time.perf_counter() - started,
        "layers": layers,
    }
    log(
        f"adaround: {len(used)} of {len(layers)} convs re-rounded on {record['images']} calibration images "
        f"(median output error {record['median_mse_ratio']:.2f}x lower than nearest rounding), "
        f"{record['seconds']:.0f} s"
    )
    return record


def mismatched_weights(adarounded_int8: Path, reference_int8: Path) -> int:
    """Quantized weight values that differ between two QDQ models (0: quantizing the snapped fp32 model kept
    every AdaRound level)."""
    import onnx
    from onnx import numpy_helper

    def weights(path: Path) -> dict[str, np.ndarray]:
        model = onnx.load(str(path))
        return {
            init.name: numpy_helper.to_array(init)
            for init in model.graph.initializer
            if init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and len(init.dims) == 4
        }

    left, right = weights(adarounded_int8), weights(reference_int8)
    return int(sum(np.count_nonzero(left[k] != right[k]) for k in left.keys() & right.keys()))
