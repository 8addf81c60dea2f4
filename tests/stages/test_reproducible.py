"""Reproducibility: rebuilding the same profile from scratch (fixed seed, same machine) gives the same files.

The manifest's `determinism` section claims that splits, CPU training with a fixed seed and
thread count, export and int8 quantization are deterministic; this test holds it to that.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from edgetl.console import Log
from edgetl.files import sha256_file
from edgetl.pipeline import build
from tests.helpers import deep_merge, write_profile

SAME_BYTES = (
    "labels.txt",
    "data/split.json",
    "models/model.pt",
    "models/model_fp32.onnx",
    "models/model_int8.onnx",
    "optimize/quantization.json",
)


def _metrics(run: Path) -> dict[str, tuple[int, float]]:
    report = json.loads((run / "report.json").read_text())
    return {name: (a["correct"], a["accuracy"]) for name, a in report["artifacts"].items()}


def test_same_profile_twice_gives_the_same_models_and_metrics(built_run, tmp_path: Path) -> None:
    """`--force` into a copy of the run: every stage reruns from scratch (also what --force promises)."""
    first = built_run.run_dir
    shutil.copytree(first, tmp_path / "again")
    profile = yaml.safe_load((first / "profile.yaml").read_text())
    again = write_profile(tmp_path / "again.yaml", deep_merge(profile, {"output_dir": str(tmp_path / "again")}))

    outcome = build(again, force=True, log=Log(quiet=True))

    assert not any(result.skipped for result in outcome.results.values()), "--force must rerun every stage"
    second = outcome.run_dir
    for relative in SAME_BYTES:
        assert sha256_file(second / relative) == sha256_file(first / relative), relative
    assert _metrics(second) == _metrics(first)
    determinism = json.loads((second / "manifest.json").read_text())["determinism"]
    assert any("ONNX export" in claim for claim in determinism["deterministic"])
    assert any("latency" in claim for claim in determinism["not_deterministic"])
