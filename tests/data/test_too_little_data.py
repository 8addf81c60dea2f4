"""Data that leaves no val or no holdout image is refused by the data stage, before any training."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers import make_image_folder, run_cli, tiny_profile, write_profile


@pytest.mark.parametrize(
    ("per_class", "data", "expected"),
    [
        (1, {}, "no images left for val"),  # one image per class, val split off train: none
        (2, {"val_fraction": 0.5, "holdout_fraction": 0.1}, "no images left for the holdout"),
    ],
)
def test_data_that_leaves_no_val_or_holdout_is_refused_before_training(
    tmp_path: Path, capsys, per_class: int, data: dict, expected: str
) -> None:
    root = make_image_folder(tmp_path / "flat", {"reds": per_class, "blues": per_class, "greens": per_class})
    profile = tiny_profile(root, tmp_path / "run", data={"root": str(root), **data})
    profile["data"].pop("val_dir", None)
    path = write_profile(tmp_path / "p.yaml", profile)
    started = time.perf_counter()
    code, _, err = run_cli(["build", str(path), "--quiet"], capsys)
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert expected in line and str(root) in line
    assert time.perf_counter() - started < 30, "refused by the data stage, not after training"
