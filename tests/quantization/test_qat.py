"""Quantization-aware training: a model that post-training int8 breaks, and QAT bringing it back.

The model has the defect issue 12 found in a real head: one weight per output channel ~1000x the
others (here on an input channel that is always zero, so fp32 does not care). Per-channel int8
then gives every other weight of that channel a scale so coarse that it rounds to zero: PTQ
predicts one class. QAT sees that rounding in training, and the other weights grow until they
survive it; the QDQ model exported from the QAT weights by the normal path is accurate again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgetl.onnx.export import export_onnx
from edgetl.quantization.accuracy_aware import infer_logits, model_feed
from edgetl.quantization.calibration import compute_ranges
from edgetl.quantization.qat import (
    QatSettings,
    QuantizedLayer,
    fake_quantize_weight,
    insert_quantizers,
    quantization_aware_finetune,
    remove_quantizers,
)
from edgetl.quantization.qdq import QuantSettings, prepare, quantize_with_ranges, resolve_float_nodes
from tests.quantization.test_calibration import ArrayReader


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.mix = nn.Conv2d(8, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.mix(x))
        return self.head(torch.flatten(self.pool(x), 1))


def _data(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reddish vs bluish noisy 16x16 images."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    images = torch.randn(count, 3, 16, 16, generator=generator) * 0.5
    images[:, 0] += labels[:, None, None] * 1.0 - 0.5
    images[:, 2] -= labels[:, None, None] * 1.0 - 0.5
    return images, labels


def _trained_then_broken() -> Tiny:
    torch.manual_seed(0)
    model = Tiny()
    images, labels = _data(256, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for step in range(150):
        batch = slice((step * 32) % 256, (step * 32) % 256 + 32)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():  # a dead stem channel, and a huge weight on it in every `mix` filter
        model.stem.weight[7] = 0.0
        model.stem.bias[7] = -5.0
        model.bn.running_mean[7], model.bn.running_var[7] = 0.0, 1.0
        model.bn.weight[7], model.bn.bias[7] = 1.0, 0.0
        model.mix.weight[:, 7] = 1000.0
    return model


def _int8_accuracy(model: nn.Module, work: Path, calibration: np.ndarray, images: np.ndarray, labels: np.ndarray):
    """Export, calibrate and quantize as the optimize stage does; (fp32 accuracy, int8 accuracy)."""
    raw, prepared, quantized = work / "raw.onnx", work / "prepared.onnx", work / "int8.onnx"
    work.mkdir(parents=True, exist_ok=True)
    import onnx

    onnx.save(export_onnx(model, (3, 16, 16), "dynamic", 18), str(raw))
    prepare(raw, prepared)
    ranges = compute_ranges(prepared, ArrayReader(calibration, 16), "minmax")
    float_nodes = resolve_float_nodes(onnx.load(str(prepared)), ["first_conv"], [])
    settings = QuantSettings("uint8", "int8", per_channel=True, reduce_range=False)
    quantize_with_ranges(prepared, quantized, ranges, settings, float_nodes, model_feed(prepared, images))
    fp32 = float((infer_logits(prepared, images).argmax(1) == labels).mean())
    int8 = float((infer_logits(quantized, images).argmax(1) == labels).mean())
    return fp32, int8


def test_ptq_fails_and_qat_recovers(tmp_path: Path) -> None:
    model = _trained_then_broken()
    calibration = _data(64, seed=2)[0].numpy()
    test_images, test_labels = (t.numpy() for t in _data(200, seed=3))
    fp32, ptq = _int8_accuracy(model, tmp_path / "ptq", calibration, test_images, test_labels)
    assert fp32 >= 0.95, fp32
    assert ptq <= 0.6, f"post-training int8 should break this model, got {ptq:.0%}"

    train_images, train_labels = _data(128, seed=4)

    def batches(epoch: int):
        order = torch.randperm(128, generator=torch.Generator().manual_seed(epoch))
        for start in range(0, 128, 16):
            index = order[start : start + 16]
            yield train_images[index], train_labels[index]

    settings = QatSettings(epochs=12, lr=0.1, batch_size=16)
    outcome = quantization_aware_finetune(model, batches, [torch.from_numpy(calibration)], settings, steps_per_epoch=8)
    assert outcome.quantized_layers == 2  # mix and head; the stem (first conv) stays float
    assert not any(isinstance(m, QuantizedLayer) for m in outcome.model.modules())
    qat_fp32, qat_int8 = _int8_accuracy(outcome.model, tmp_path / "qat", calibration, test_images, test_labels)
    print(f"fp32 {fp32:.1%}, PTQ int8 {ptq:.1%}, QAT fp32 {qat_fp32:.1%}, QAT int8 {qat_int8:.1%}")
    assert qat_int8 >= fp32 - 0.02, (fp32, ptq, qat_fp32, qat_int8)
    assert qat_int8 >= qat_fp32 - 0.02
    # The original model is untouched (QAT trains a copy).
    assert float(model.mix.weight[0, 7].detach()) == 1000.0


def test_weight_fake_quantization_matches_symmetric_per_channel_int8() -> None:
    weight = torch.tensor([[[[0.5]], [[-1.0]], [[0.26]]], [[[2.0]], [[0.01]], [[-0.7]]]])
    quantized = fake_quantize_weight(weight, reduce_range=False)
    for row in range(2):
        scale = float(weight[row].abs().max()) / 127
        expected = torch.clamp(torch.round(weight[row] / scale), -128, 127) * scale
        assert torch.allclose(quantized[row], expected, atol=1e-6)
    assert len(torch.unique(fake_quantize_weight(torch.linspace(-1, 1, 1000).reshape(1, 1000), True))) <= 128


def test_quantizers_skip_kept_float_layers_and_come_out_again() -> None:
    model = Tiny()
    wrapped = insert_quantizers(model, ["first_conv", "classifier"], signed_activations=False, reduce_range=False)
    assert len(wrapped) == 1 and wrapped[0].layer is model.mix.layer
    assert isinstance(model.stem, nn.Conv2d) and isinstance(model.head, nn.Linear)
    remove_quantizers(model)
    assert isinstance(model.mix, nn.Conv2d)


@pytest.mark.parametrize("signed", [False, True])
def test_activation_ranges_come_from_calibration_then_round(signed: bool) -> None:
    model = Tiny().eval()
    (layer,) = insert_quantizers(model, ["first_conv", "classifier"], signed, reduce_range=False)
    images = _data(16, seed=5)[0]
    with torch.no_grad():
        model(images)
        assert float(layer.inputs.low) <= 0.0 <= float(layer.inputs.high)
        layer.inputs.observing = False
        levels = layer.inputs(torch.linspace(float(layer.inputs.low), float(layer.inputs.high), 5000))
    assert len(torch.unique(levels)) <= 256


def test_wrapped_layers_compute_what_the_originals_do_including_same_padding() -> None:
    """timm's TF-style Conv2dSame pads dynamically; a wrapper that re-implemented the conv got it wrong."""
    import copy

    from edgetl.backbones import get_backbone

    model = get_backbone("efficientnet_lite0").build(num_classes=3, pretrained=False).model.eval()
    assert any(type(m).__name__ == "Conv2dSame" for m in model.modules())
    wrapped = copy.deepcopy(model)
    quantizers = insert_quantizers(wrapped, ["first_conv"], signed_activations=False, reduce_range=False)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, observed = model(images), wrapped(images)  # observing: no rounding yet
        assert torch.allclose(expected, observed, atol=1e-5)
        for quantized in quantizers:
            quantized.inputs.observing = False
        rounded = wrapped(images)
    assert not torch.allclose(expected, rounded, atol=1e-5)  # now int8 is simulated
    assert (rounded - expected).abs().max() < expected.abs().max()  # ... and close to fp32
    remove_quantizers(wrapped)
    with torch.no_grad():
        assert torch.allclose(model(images), wrapped(images), atol=1e-6)
