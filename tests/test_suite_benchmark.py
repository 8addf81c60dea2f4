"""benchmarks/suite.py on a tiny generated suite: rows, reference rows, their cache, the targets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import deep_merge, make_dataset, tiny_profile

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite_module():
    sys.path.insert(0, str(REPO))
    from benchmarks import suite

    return suite


def _overrides(tmp_path: Path) -> Path:
    """The tiny profile's speed settings, on top of each data-only profile (finetune keeps strategy auto)."""
    tiny = tiny_profile(Path("unused"), Path("unused"))
    overrides = {key: tiny[key] for key in ("backbone", "export", "optimize", "benchmark")}
    overrides["data"] = {"holdout_fraction": 0.2}
    overrides["finetune"] = {"epochs": 1, "batch_size": 8, "threads": 1}
    # One epoch on 16 images can leave all-int8 short of the accuracy budget; the float fallback's speed-up
    # price is a latency ratio, which a loaded machine (tests run in parallel) cannot measure reliably.
    overrides["optimize"] = deep_merge(overrides["optimize"], {"int8": {"accuracy_aware": {"keep_speedup": None}}})
    path = tmp_path / "overrides.yaml"
    path.write_text(yaml.safe_dump(overrides))
    return path


def test_suite_on_a_tiny_generated_suite(suite_module, tmp_path: Path) -> None:
    home = tmp_path / "datasets"
    make_dataset(home / "colours", train=8, val=3)
    (home / "not-a-dataset").mkdir()  # no train/ folder: ignored
    out, cache = tmp_path / "results" / "suite", tmp_path / "results" / "references.json"
    args = ["--data-home", str(home), "--overrides", str(_overrides(tmp_path)), "--work", str(tmp_path / "work")]
    args += ["--out", str(out), "--cache", str(cache)]
    assert suite_module.main(args) == 0

    result = json.loads(out.with_suffix(".json").read_text())
    assert result["machine"]["cpu"] and result["overrides"]
    (row,) = result["rows"]
    assert row["dataset"] == "colours"
    default = row["default"]
    assert "failed" not in default, default
    assert default["fp32"]["total"] == 6 and 0 <= default["fp32"]["ci95"][0] <= default["fp32"]["accuracy"]
    assert default["strategy"] in ("full", "feature_extract") and "holdout" in default["why"]
    # auto's choice re-examined on val: both candidates and the regret against the better one.
    decision = default["decision"]
    assert decision["probe_val"]["total"] == decision["finetune_val"]["total"] == 6
    assert decision["kept_val"]["correct"] == default["fp32"]["correct"]
    if decision["kept"] == "finetune":
        assert decision["kept_val"] == decision["finetune_val"]
    best = max(decision["probe_val"]["accuracy"], decision["finetune_val"]["accuracy"])
    assert decision["regret_points"] == pytest.approx((best - decision["kept_val"]["accuracy"]) * 100, abs=0.01)
    int8 = default["int8"]
    assert int8["speedup_vs_onnx_fp32"] > 0 and 0 < int8["size_ratio_vs_onnx_fp32"] < 1
    assert set(row["references"]) == {"probe", "finetune"}
    for ref in row["references"].values():
        assert ref["fp32"]["total"] == 6 and not ref.get("cached")
    assert set(row["verdict"]) == {"fp32_within_reference", "int8_within_fp32", "int8_speedup", "int8_size"}
    markdown = out.with_suffix(".md").read_text()
    assert "Profiles carried overrides" in markdown and "reference: probe" in markdown
    assert "| regret |" in markdown and "## `auto`'s choice on val" in markdown
    assert result["machine"]["cpu"] in markdown

    # Reference rows are cached by dataset and recipe: a second run reuses them.
    cached = json.loads(cache.read_text())
    assert len(cached) == 2
    args_again = [*args, "--references-only", "--references", "probe"]  # the default row is kept as it was
    assert suite_module.main(args_again) == 0
    again = json.loads(out.with_suffix(".json").read_text())["rows"][0]["references"]
    assert again["probe"]["cached"] is True
    assert again["probe"]["fp32"] == row["references"]["probe"]["fp32"]


def test_a_refused_build_is_a_row_with_its_message(suite_module) -> None:
    row = {"default": {"failed": "int8: no model meets ...", "exit_code": 3, "build_seconds": 1.0}, "references": {}}
    assert suite_module.verdict(row) == {"refused_with_one_line": True}


def test_unknown_dataset_names_are_refused(suite_module, tmp_path: Path) -> None:
    make_dataset(tmp_path / "a", train=2, val=1)
    with pytest.raises(SystemExit, match="no dataset b"):
        suite_module.discover(tmp_path, ["b"])


def test_datasets_are_found_as_absolute_paths_from_a_relative_data_home(
    suite_module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The suite writes each profile under its work folder, where a relative data.root would point elsewhere.
    (tmp_path / "home" / "a" / "train").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    found = suite_module.discover(Path("home"), None)
    assert found == [tmp_path / "home" / "a"]
    assert found[0].is_absolute()
