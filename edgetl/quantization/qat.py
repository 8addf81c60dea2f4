"""Quantization-aware training: a short fine-tune with int8 simulated where ONNX Runtime quantizes.

When post-training quantization misses the accuracy budget, the next step before keeping layers
in float is to let the network adapt to int8 rounding. Every Conv and Linear that will run in int8
gets, in PyTorch, the same two quantizers the QDQ model will have:
* its **input** activation: uint8 (or int8), asymmetric per-tensor, range from min/max over the
  calibration images (what the deployed model is calibrated on again afterwards);
* its **weight**: symmetric int8 per output channel (absmax / 127, or / 63 with `reduce_range`),
  recomputed from the current weight every step, as ONNX Runtime computes it at quantization time.
Rounding passes gradients straight through (STE). BatchNorm stays in eval mode, so quantizing the
unfolded conv weight per channel is exactly quantizing the folded one (a per-channel scale
commutes with the BatchNorm scale). Layers kept in float (`keep_float`) get no quantizers.

The loss distils the fp32 model (KL on its logits; optionally plus cross-entropy on the labels):
the gates measure fidelity to fp32, and distillation aims at exactly that. The fine-tuned weights are then
exported and quantized by the normal path (new calibration, the same Q/DQ placement), so the
shipped QDQ ONNX is validated like any other; QAT only changes the float weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_EMA = 0.01  # share of each batch's min/max in the running activation range


class _ActivationQuantizer(nn.Module):
    """Per-tensor affine fake quantization with a running min/max range (always including zero)."""

    def __init__(self, signed: bool) -> None:
        super().__init__()
        self.quant_min, self.quant_max = (-128, 127) if signed else (0, 255)
        self.register_buffer("low", torch.tensor(float("inf")))
        self.register_buffer("high", torch.tensor(float("-inf")))
        self.observing = True  # calibration pass: min/max only, no rounding
        self.ema = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = x.detach().min().clamp(max=0.0), x.detach().max().clamp(min=0.0)
        if self.observing:
            self.low.copy_(torch.minimum(self.low, low))
            self.high.copy_(torch.maximum(self.high, high))
            return x
        if self.ema and self.training:
            self.low.mul_(1 - _EMA).add_(_EMA * low)
            self.high.mul_(1 - _EMA).add_(_EMA * high)
        scale = ((self.high - self.low) / (self.quant_max - self.quant_min)).clamp(min=1e-8)
        zero_point = (self.quant_min - torch.round(self.low / scale)).clamp(self.quant_min, self.quant_max)
        return torch.fake_quantize_per_tensor_affine(x, scale.float(), zero_point.int(), self.quant_min, self.quant_max)


def fake_quantize_weight(weight: torch.Tensor, reduce_range: bool) -> torch.Tensor:
    """Symmetric per-output-channel int8, the scale recomputed from the weight (as ONNX Runtime does)."""
    top = 63 if reduce_range else 127
    absmax = weight.detach().abs().flatten(1).amax(dim=1).clamp(min=1e-12)
    scale = (absmax / top).float()
    zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -top - 1, top)


class _WeightQuantizer(nn.Module):
    """A parametrization: the layer's weight, as every forward sees it, is its int8 round trip."""

    def __init__(self, reduce_range: bool) -> None:
        super().__init__()
        self.reduce_range = reduce_range
        self.enabled = False

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize_weight(weight, self.reduce_range) if self.enabled else weight


class QuantizedLayer(nn.Module):
    """A Conv2d or Linear with fake-quantized input and weight; `layer` keeps the trainable weight.

    The layer's own forward runs (timm's `Conv2dSame` pads dynamically, which re-implementing the
    convolution here got wrong), its weight parametrized by `_WeightQuantizer`.
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear, signed_activations: bool, reduce_range: bool) -> None:
        super().__init__()
        from torch.nn.utils import parametrize

        self.inputs = _ActivationQuantizer(signed_activations)
        self.weights = _WeightQuantizer(reduce_range)
        parametrize.register_parametrization(layer, "weight", self.weights)
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.weights.enabled = not self.inputs.observing
        return self.layer(self.inputs(x))

    def release(self) -> nn.Module:
        """The plain layer with its trained (float) weight."""
        from torch.nn.utils import parametrize

        parametrize.remove_parametrizations(self.layer, "weight", leave_parametrized=False)
        return self.layer


def _compute_layers(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, layer) for every Conv2d and Linear, in forward-definition order."""
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d | nn.Linear):
                found.append((parent, name, child))
    return found


def insert_quantizers(
    model: nn.Module, keep_float: Iterable[str], signed_activations: bool, reduce_range: bool
) -> list[QuantizedLayer]:
    """Wrap every compute layer except the roles in `keep_float` ('first_conv', 'classifier'), in place."""
    layers = _compute_layers(model)
    skipped: set[int] = set()
    keep = set(keep_float)
    convs = [entry for entry in layers if isinstance(entry[2], nn.Conv2d)]
    if "first_conv" in keep and convs:
        skipped.add(id(convs[0][2]))
    linears = [entry for entry in layers if isinstance(entry[2], nn.Linear)]
    if "classifier" in keep and linears:
        skipped.add(id(linears[-1][2]))
    wrapped = []
    for parent, name, layer in layers:
        if id(layer) in skipped:
            continue
        quantized = QuantizedLayer(layer, signed_activations, reduce_range)
        setattr(parent, name, quantized)
        wrapped.append(quantized)
    return wrapped


def remove_quantizers(model: nn.Module) -> nn.Module:
    """Put the plain layers (with their QAT-trained weights) back, in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QuantizedLayer):
                setattr(parent, name, child.release())
    return model


@dataclass(frozen=True)
class QatSettings:
    """Defaults mirror `optimize.int8.qat` in the profile (edgetl.profile.QatConfig), which the stage passes."""

    epochs: int = 2
    lr: float = 3e-5
    batch_size: int = 16
    distillation: float = 1.0  # weight of the KL term against the fp32 logits; the rest is cross-entropy
    keep_float: tuple[str, ...] = ("first_conv",)
    signed_activations: bool = False
    reduce_range: bool = False
    # Follow activation ranges with a moving average while training. Off by default: the deployed
    # model is calibrated again on the calibration images, so QAT should train with those ranges.
    track_ranges: bool = False


@dataclass
class QatOutcome:
    model: nn.Module  # plain layers, QAT-trained weights, eval mode
    losses: list[float]  # mean loss per epoch
    steps: int
    quantized_layers: int


def quantization_aware_finetune(
    model: nn.Module,
    batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    calibration: Iterable[torch.Tensor],
    settings: QatSettings,
    steps_per_epoch: int,
    log: Callable[[str], None] = lambda message: None,
) -> QatOutcome:
    """Fine-tune a copy of `model` with simulated int8; `batches(epoch)` yields `steps_per_epoch` (images, labels).

    `calibration` (preprocessed image batches) sets the initial activation ranges, as the
    calibration pass of post-training quantization does.
    """
    teacher, student = copy.deepcopy(model), copy.deepcopy(model)
    teacher.train(False)
    student.train(False)
    quantizers = insert_quantizers(student, settings.keep_float, settings.signed_activations, settings.reduce_range)
    with torch.no_grad():
        for images in calibration:
            student(images)
    for quantized in quantizers:  # ranges stay those of the calibration images, as in the deployed model
        quantized.inputs.observing = False
        quantized.inputs.ema = settings.track_ranges
    parameters = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=0.0)
    total = max(1, settings.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    losses, steps = [], 0
    for epoch in range(1, settings.epochs + 1):
        running, seen = 0.0, 0
        _train_mode_without_batchnorm(student)
        for images, labels in batches(epoch):
            with torch.no_grad():
                target = F.log_softmax(teacher(images), dim=1)
            logits = student(images)
            kl = F.kl_div(F.log_softmax(logits, dim=1), target, log_target=True, reduction="batchmean")
            loss = settings.distillation * kl + (1 - settings.distillation) * F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += float(loss.detach()) * len(labels)
            seen += len(labels)
            steps += 1
        losses.append(running / max(1, seen))
        log(f"QAT epoch {epoch}/{settings.epochs}: loss {losses[-1]:.4f}")
    student.eval()
    return QatOutcome(remove_quantizers(student), losses, steps, len(quantizers))


def _train_mode_without_batchnorm(model: nn.Module) -> None:
    """Dropout and quantizer EMA on; BatchNorm statistics frozen (what makes per-channel weight QAT exact)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def qat_from_checkpoint(
    checkpoint_path: Path,
    train: tuple[list[Path], list[int]],
    calibration: list[Path],
    config: Any,
    keep_float: Iterable[str],
    signed_activations: bool,
    reduce_range: bool,
    seed: int,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[QatOutcome, Any, int]:
    """QAT of a fine-tuned checkpoint on (at most `config.images` of) its training images.

    `config` is the profile's `optimize.int8.qat`. Light augmentation (crops 0.5-1, flips), seeded
    per epoch. Returns the outcome, the checkpoint's preprocessing and the number of images used.
    """
    import numpy as np

    from edgetl.backbones.checkpoint import load_checkpoint
    from edgetl.profile import AugmentationConfig
    from edgetl.training.datasets import ImageListDataset, train_transform

    checkpoint = load_checkpoint(checkpoint_path)
    pre = checkpoint.preprocessing
    paths, labels = train
    chosen = sorted(np.random.default_rng(seed).permutation(len(paths))[: config.images].tolist())
    paths, labels = [paths[i] for i in chosen], [labels[i] for i in chosen]
    augment = train_transform(pre, AugmentationConfig(crop_scale=(0.5, 1.0), color_jitter=0.0))
    dataset = ImageListDataset(paths, labels, augment, preload_side=pre.resize, seed=seed, decode=pre.decode)
    size = config.batch_size

    def batches(epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        order = np.random.default_rng([seed, epoch]).permutation(len(paths))
        for start in range(0, len(order), size):
            items = [dataset[(int(i), epoch)] for i in order[start : start + size]]
            yield torch.stack([item[0] for item in items]), torch.tensor([item[1] for item in items])

    calibration_batches = [torch.from_numpy(pre.batch(calibration[i : i + 16])) for i in range(0, len(calibration), 16)]
    settings = QatSettings(
        epochs=config.epochs,
        lr=config.lr,
        batch_size=size,
        distillation=config.distillation,
        keep_float=tuple(keep_float),
        signed_activations=signed_activations,
        reduce_range=reduce_range,
    )
    outcome = quantization_aware_finetune(
        checkpoint.build_model(),
        batches,
        [b for b in calibration_batches if len(b)],
        settings,
        steps_per_epoch=-(-len(paths) // size),
        log=log,
    )
    return outcome, pre, len(paths)
