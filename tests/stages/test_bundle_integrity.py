"""A bundle opens only files inside it whose SHA-256 matches bundle.json (issue 15's three attacks, each refused)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgetl import layout
from edgetl.bundle import read_bundle
from edgetl.files import sha256_file
from tests.helpers import run_cli


@pytest.fixture
def bundle(built_run, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(built_run.run_dir / layout.BUNDLE_DIR, copy)
    return copy


def _edit_info(bundle: Path, change) -> None:
    info = json.loads((bundle / layout.BUNDLE_INFO).read_text())
    change(info)
    (bundle / layout.BUNDLE_INFO).write_text(json.dumps(info))


def _predict(bundle: Path, capsys) -> tuple[int, str]:
    image = sorted((bundle / layout.BUNDLE_REFERENCE_DIR).iterdir())[0]
    code, _, err = run_cli(["predict", str(bundle), str(image)], capsys)
    return code, err.strip()


def test_a_new_bundle_records_every_files_hash(bundle: Path) -> None:
    info = json.loads((bundle / layout.BUNDLE_INFO).read_text())
    files = info["files"]
    on_disk = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {layout.BUNDLE_INFO}
    assert set(files) == on_disk
    assert all(sha256_file(bundle / name) == digest for name, digest in files.items())
    assert "## Integrity" in (bundle / layout.BUNDLE_README).read_text()
    read_bundle(bundle)


def test_a_model_path_outside_the_bundle_is_refused(bundle: Path, tmp_path: Path, capsys) -> None:
    shutil.copyfile(bundle / "model.onnx", tmp_path / "outside.onnx")
    _edit_info(bundle, lambda info: info["model"].update(file="../outside.onnx"))
    code, err = _predict(bundle, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "'../outside.onnx' points outside the bundle" in err


def test_an_absolute_path_is_refused(bundle: Path, capsys) -> None:
    _edit_info(bundle, lambda info: info["model"].update(file="/etc/hostname"))
    code, err = _predict(bundle, capsys)
    assert code == 2 and "'/etc/hostname' must be a path inside the bundle" in err


def test_a_symlink_out_of_the_bundle_is_refused(bundle: Path, tmp_path: Path, capsys) -> None:
    shutil.copyfile(bundle / "model.onnx", tmp_path / "elsewhere.onnx")
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    code, err = _predict(bundle, capsys)
    assert code == 2 and "points outside the bundle" in err


def test_a_changed_model_is_refused_before_it_is_loaded(bundle: Path, capsys) -> None:
    with open(bundle / "model.onnx", "ab") as model:
        model.write(b"\0")
    code, err = _predict(bundle, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "model.onnx: its SHA-256 does not match" in err


def test_a_changed_label_file_is_refused(bundle: Path, capsys) -> None:
    labels = bundle / layout.BUNDLE_LABELS
    labels.write_text("".join(reversed(labels.read_text().splitlines(keepends=True))))
    code, err = _predict(bundle, capsys)
    assert code == 2 and "labels.txt: its SHA-256 does not match" in err


def test_a_bundle_from_before_file_hashes_still_opens_and_checks_its_model(bundle: Path, capsys) -> None:
    _edit_info(bundle, lambda info: info.pop("files"))
    code, _ = _predict(bundle, capsys)
    assert code == 0
    with open(bundle / "model.onnx", "ab") as model:
        model.write(b"\0")
    code, err = _predict(bundle, capsys)
    assert code == 2 and "model.onnx: its SHA-256 does not match" in err
