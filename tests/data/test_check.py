from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgetl.data.check import ImageRecord, duplicate_problems, require_trainable, scan_folder
from edgetl.errors import DataError
from tests.helpers import add_messy_files, make_image_folder

EXTENSIONS = [".jpg", ".jpeg", ".png", ".gif"]


def test_messy_files_are_reported_with_reasons_and_skipped(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "train", {"reds": 4, "blues": 4})
    expected = add_messy_files(root / "reds")
    (root / "README.md").write_text("stray file next to the class folders")
    scan = scan_folder(root, EXTENSIONS)
    reasons = {Path(p.rel).name: p.reason for p in scan.problems}
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons.get(name))
    assert "outside any class folder" in reasons["README.md"]
    assert scan.counts() == {"blues": 4, "reds": 4}
    assert all(r.rel.startswith(("reds/", "blues/")) for r in scan.images)


def test_records_carry_hash_size_and_format(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path, {"reds": 1, "blues": 1}, fmt="PNG")
    record = scan_folder(root, EXTENSIONS).images[0]
    assert len(record.sha256) == 64 and record.format == "PNG" and (record.width, record.height) == (72, 56)


def test_placeholder_detection_can_be_disabled(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path, {"reds": 2, "blues": 2})
    add_messy_files(root / "reds")
    names = {Path(r.rel).name for r in scan_folder(root, EXTENSIONS, skip_placeholders=False).images}
    assert "placeholder.gif" in names


def test_real_hymenoptera_placeholder_is_the_only_skip(hymenoptera: Path) -> None:
    scan = scan_folder(hymenoptera / "train", EXTENSIONS, rel_base=hymenoptera)
    assert [(p.rel, p.reason.split(" (")[0]) for p in scan.problems] == [
        ("train/ants/imageNotFound.gif", "placeholder image")
    ]
    assert scan.counts() == {"ants": 123, "bees": 121}
    assert any(r.rel.endswith("formica.jpeg") for r in scan.images)


def test_fewer_than_two_classes_is_refused(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path, {"reds": 3})
    with pytest.raises(DataError, match="at least 2 class folders, found 1"):
        require_trainable(scan_folder(root, EXTENSIONS), "train")


def test_a_class_with_no_usable_image_is_refused(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path, {"reds": 3, "blues": 1})
    shutil.copy(root / "blues" / "000.jpg", root / "reds" / "copy.jpg")
    (root / "blues" / "000.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no usable image: blues"):
        require_trainable(scan_folder(root, EXTENSIONS), "train")


def _record(rel: str, label: str, digest: str) -> ImageRecord:
    return ImageRecord(rel=rel, label=label, sha256=digest, width=1, height=1, mode="RGB", format="JPEG")


def test_duplicates_across_splits_and_labels_are_flagged() -> None:
    problems = duplicate_problems(
        {
            "train": [
                _record("train/a/1.jpg", "a", "h1"),
                _record("train/b/2.jpg", "b", "h1"),
                _record("train/a/3.jpg", "a", "h2"),
            ],
            "val": [_record("val/a/9.jpg", "a", "h2")],
        }
    )
    reasons = {p.rel: p.reason for p in problems}
    assert "labelled 'a'" in reasons["train/b/2.jpg"]
    assert "leakage" in reasons["val/a/9.jpg"]
    assert all(p.action == "warning" for p in problems)


@pytest.mark.parametrize("name", ["be\vees", "a\nb", "x\x0cy", "p\u2028q", "c\x85d", "tab\there", "bell\x07"])
def test_class_names_that_would_not_read_back_from_labels_txt_are_refused(tmp_path: Path, name: str) -> None:
    root = make_image_folder(tmp_path / "data", {"reds": 2, "blues": 2})
    (root / name).mkdir()
    with pytest.raises(DataError) as info:
        scan_folder(root, [".jpg", ".png"])
    assert repr(name) in str(info.value) and "labels.txt" in str(info.value)


def test_class_names_with_spaces_and_other_scripts_are_fine(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data", {"reds": 2, "blues": 2})
    names = ["honey bee", "Ameise", "蜂", "mañana"]
    for name in names:
        shutil.copytree(root / "reds", root / name)
    assert set(scan_folder(root, [".jpg", ".png"]).classes) == {"reds", "blues", *names}


def test_a_fifo_in_a_class_folder_is_listed_and_skipped_without_blocking(tmp_path: Path) -> None:
    import os

    root = make_image_folder(tmp_path / "data", {"reds": 2, "blues": 2})
    os.mkfifo(root / "reds" / "pipe.jpg")
    scan = scan_folder(root, [".jpg"])
    assert scan.counts() == {"reds": 2, "blues": 2}
    assert any(p.rel == "reds/pipe.jpg" and "not a regular file" in p.reason for p in scan.problems)


def test_a_hidden_folder_at_the_root_is_named_not_dropped_silently(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data", {"reds": 2, "blues": 2})
    shutil.copytree(root / "reds", root / ".ipynb_checkpoints")
    scan = scan_folder(root, [".jpg"])
    assert scan.classes == ["blues", "reds"]
    (problem,) = [p for p in scan.problems if p.rel == ".ipynb_checkpoints"]
    assert "hidden folder" in problem.reason and problem.action == "warning"
