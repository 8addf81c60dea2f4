"""`edgetl data check DIR`: every problem file with its reason, counts, imbalance, duplicates, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetl.data.report import check_dataset
from edgetl.profile import IMAGE_EXTENSIONS
from tests.helpers import (
    CLASS_COLOURS,
    add_messy_files,
    make_dataset,
    make_image,
    make_image_folder,
    run_cli,
    tiny_profile,
    write_profile,
)


def odd_images(class_dir: Path) -> dict[str, str]:
    """Decodable images in unusual modes: each must be kept (and is converted to RGB when loaded)."""
    photo = make_image(CLASS_COLOURS["blues"], seed=7)
    with_alpha = photo.convert("RGBA")
    with_alpha.putalpha(Image.linear_gradient("L").resize(photo.size))
    with_alpha.save(class_dir / "alpha.png")
    photo.convert("CMYK").save(class_dir / "cmyk.jpg")
    photo.convert("L").save(class_dir / "gray.png")
    Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257).save(class_dir / "sixteen.png")
    return {"alpha.png": "RGBA", "cmyk.jpg": "CMYK", "gray.png": "L", "sixteen.png": "I;16"}


def test_lists_every_problem_file_counts_and_modes(tmp_path: Path, capsys) -> None:
    root = make_dataset(tmp_path / "data", train=6, val=3)
    expected = add_messy_files(root / "train/reds")
    modes = odd_images(root / "train/blues")
    json_file = tmp_path / "check.json"

    code, out, err = run_cli(["data", "check", str(root), "--json", str(json_file)], capsys)

    assert code == 0, err
    for name, fragment in expected.items():
        line = next((line for line in out.splitlines() if f"train/reds/{name}:" in line), None)
        assert line is not None and fragment in line, (name, out)
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:5]}
    assert table == {"blues": ["10", "3"], "reds": ["6", "3"], "total": ["16", "6"]}  # blues: 6 + 4 odd images
    check = json.loads(json_file.read_text())
    assert check["counts"] == {"train": {"blues": 10, "reds": 6}, "val": {"blues": 3, "reds": 3}}
    assert {mode: check["images_by_mode"].get(mode) for mode in modes.values()} == dict.fromkeys(modes.values(), 1)
    assert len([p for p in check["problems"] if p["action"] == "skipped"]) == len(expected)


def test_duplicates_across_classes_and_train_val_leakage(tmp_path: Path, capsys) -> None:
    root = make_dataset(tmp_path / "data", train=4, val=2)
    shutil.copy(root / "train/reds/000.jpg", root / "val/reds/leaked.jpg")
    shutil.copy(root / "train/reds/001.jpg", root / "train/blues/mislabelled.jpg")

    code, out, _ = run_cli(["data", "check", str(root)], capsys)

    assert code == 0
    assert "val/reds/leaked.jpg: identical to train/reds/000.jpg in train (train/val leakage)" in out
    assert "train/reds/001.jpg: identical to train/blues/mislabelled.jpg but labelled 'blues'" in out
    assert "1 train/val leak(s)" in out


def test_imbalance_is_measured_and_warned_about(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data", {"reds": 12, "blues": 3})
    check = check_dataset(root, extensions=IMAGE_EXTENSIONS)
    assert check.imbalance() == 4.0
    assert check.val is None
    warning = next(p for p in check.problems if "imbalanced" in p.reason)
    assert "reds has 4.0x the images of blues" in warning.reason and "class_balance" in warning.reason


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: make_image_folder(root / "train", {"reds": 3}), "needs at least 2 class folders, found 1"),
        (
            lambda root: (make_image_folder(root / "train", {"reds": 3}), (root / "train/blues").mkdir()),
            "class folder(s) with no usable image: blues",
        ),
        (
            lambda root: (make_dataset(root, train=3, val=1), make_image_folder(root / "val", {"greens": 1})),
            "val class folder(s) greens have no train folder",
        ),
        (lambda root: root.mkdir(), "no class folders found"),
    ],
    ids=["one-class", "empty-class", "val-class-unknown-to-train", "no-class-folders"],
)
def test_untrainable_data_is_refused_in_one_line(tmp_path: Path, capsys, make, message: str) -> None:
    root = tmp_path / "data"
    make(root)
    code, out, err = run_cli(["data", "check", str(root)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("edgetl: error: ") and message in err, err


def test_strict_fails_on_warnings_and_a_profile_uses_its_data_settings(tmp_path: Path, capsys) -> None:
    root = make_dataset(tmp_path / "data", train=4, val=2)
    make_image(CLASS_COLOURS["reds"], seed=3, size=(20, 20)).save(root / "train/reds/small.png")
    code, _, err = run_cli(["data", "check", str(root), "--strict"], capsys)
    assert code == 0, err  # 20 px is above the default 16 px minimum

    profile = tiny_profile(root, tmp_path / "run", data={"root": str(root), "min_image_size": 32})
    code, out, err = run_cli(["data", "check", str(write_profile(tmp_path / "p.yaml", profile)), "--strict"], capsys)
    assert code == 2 and "train/reds/small.png: too small (20x20 px, minimum 32)" in out
    assert "1 problem(s) found (--strict)" in err
    assert not (tmp_path / "run").exists(), "checking data must not create the run directory"
