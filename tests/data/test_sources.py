from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from edgetl.data import sources
from edgetl.data.sources import (
    HYMENOPTERA,
    download_named_dataset,
    resolve_named_dataset,
    safe_extract_zip,
    tree_digest,
)
from edgetl.errors import DataError, DownloadError
from tests.helpers import make_dataset


def _archive(tmp_path: Path) -> tuple[Path, sources.NamedDataset]:
    """A zip laid out like the official one, and a dataset entry whose digest matches it."""
    folder = make_dataset(tmp_path / "src" / "hymenoptera_data", train=2, val=1)
    digest, count = tree_digest(folder, ("train", "val"))
    archive = tmp_path / "hymenoptera_data.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            bundle.write(path, path.relative_to(folder.parent).as_posix())
    dataset = replace(HYMENOPTERA, url=archive.as_uri(), tree_sha256=digest, file_count=count)
    return archive, dataset


def test_reference_copy_matches_the_recorded_digest(hymenoptera: Path) -> None:
    assert tree_digest(hymenoptera, ("train", "val")) == (HYMENOPTERA.tree_sha256, HYMENOPTERA.file_count)


def test_resolution_order_root_then_data_home_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = make_dataset(tmp_path / "home" / "hymenoptera", train=1, val=1)
    cached = make_dataset(tmp_path / "cache" / "datasets" / "hymenoptera", train=1, val=1)
    explicit = make_dataset(tmp_path / "explicit", train=1, val=1)
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(tmp_path / "cache"))
    assert resolve_named_dataset("hymenoptera", explicit) == explicit
    monkeypatch.setenv("EDGETL_DATA_HOME", str(tmp_path / "home"))
    assert resolve_named_dataset("hymenoptera", None) == home
    monkeypatch.delenv("EDGETL_DATA_HOME")
    assert resolve_named_dataset("hymenoptera", None) == cached


def test_root_without_splits_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not contain train/ and val/"):
        resolve_named_dataset("hymenoptera", tmp_path)


def test_offline_without_a_local_copy_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(DownloadError) as caught:
        resolve_named_dataset("hymenoptera", None)
    assert "EDGETL_OFFLINE" in str(caught.value) and "EDGETL_DATA_HOME" in str(caught.value)


def test_download_is_verified_then_cached(tmp_path: Path) -> None:
    _, dataset = _archive(tmp_path)
    destination = tmp_path / "cache" / "hymenoptera"
    assert download_named_dataset(dataset, destination) == destination
    assert (destination / "train" / "reds" / "000.jpg").is_file()
    assert not list(destination.parent.glob(".hymenoptera-*")), "temporary download folder left behind"


def test_tampered_download_is_rejected_and_not_cached(tmp_path: Path) -> None:
    _, dataset = _archive(tmp_path)
    destination = tmp_path / "cache" / "hymenoptera"
    with pytest.raises(DownloadError, match="do not match the reference"):
        download_named_dataset(replace(dataset, tree_sha256="0" * 64), destination)
    assert not destination.exists()


def test_unreachable_url_is_a_one_line_error(tmp_path: Path) -> None:
    dataset = replace(HYMENOPTERA, url=(tmp_path / "missing.zip").as_uri())
    with pytest.raises(DownloadError, match="cannot download"):
        download_named_dataset(dataset, tmp_path / "cache" / "hymenoptera")


def test_zip_slip_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../../escaped.txt", "gotcha")
    with pytest.raises(DownloadError, match="escapes the extraction folder"):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="not a valid zip"):
        safe_extract_zip(archive, tmp_path / "out")


def test_a_relative_data_home_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    # split.json records the dataset root: relative, it would name another folder from another directory.
    from edgetl.paths import cache_dir, data_home

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGETL_DATA_HOME", "datasets")
    monkeypatch.setenv("EDGETL_CACHE_DIR", "cache")
    assert data_home() == tmp_path / "datasets" and cache_dir() == tmp_path / "cache"
