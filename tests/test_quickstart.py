"""The README's quickstart, end to end on the real hymenoptera set (about two minutes on 2 cores).

Accuracy targets from issue #3 are asserted; latency ratios are not (they depend on the CPU and
machine load: `benchmarks/quickstart.py` measures and records them instead).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgetl.console import Log
from edgetl.pipeline import build
from tests.helpers import deep_merge, write_profile

REPO = Path(__file__).resolve().parents[1]
LIGHT_TIMING = {"warmup": 2, "iterations": 10, "rounds": 2, "batch_sizes": [1], "memory": False, "compute_peak": False}


@pytest.mark.slow
def test_quickstart_meets_the_accuracy_targets(hymenoptera: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGETL_DATA_HOME", str(hymenoptera.parent))
    # The README's profile; only the timing loops are shortened (latency is not asserted here).
    profile = yaml.safe_load((REPO / "profiles/quickstart.yaml").read_text())
    profile = deep_merge(profile, {"benchmark": LIGHT_TIMING})
    profile_path = write_profile(tmp_path / "quickstart.yaml", profile)
    outcome = build(profile_path, output_dir=tmp_path / "run", log=Log(quiet=True))
    report = json.loads((tmp_path / "run/report.json").read_text())
    torch_fp32, onnx_fp32, int8 = (report["artifacts"][n] for n in ("torch_fp32", "onnx_fp32", "onnx_int8"))

    assert report["eval"]["images"] == 153
    assert torch_fp32["accuracy"] >= 0.96, torch_fp32["correct"]
    assert onnx_fp32["agreement"] == 1.0
    assert abs(int8["correct"] - torch_fp32["correct"]) <= 1, "int8 within one image of fp32"
    # Measured 99.3% (one image) on an AVX2 EPYC; other CPUs run other int8 kernels (VNNI, ARM dot
    # product) whose rounding can flip one more borderline image, hence 98% here.
    assert int8["agreement"] >= 0.98
    assert int8["size_ratio_vs"]["onnx_fp32"] <= 0.3
    assert report["passed"], report["budgets"]
    assert outcome.results["finetune"].summary.head_init["mode"] == "imagenet"

    # An unchanged re-run (issue #7): every stage is up to date, nothing is rebuilt, seconds not minutes.
    rerun = build(profile_path, output_dir=tmp_path / "run", log=Log(quiet=True))
    assert all(result.skipped for result in rerun.results.values()), [
        n for n, r in rerun.results.items() if not r.skipped
    ]
    assert rerun.seconds < 15, f"{rerun.seconds:.1f} s for an up-to-date build"
    rebuilt = json.loads((tmp_path / "run/report.json").read_text())
    assert rebuilt["artifacts"]["onnx_int8"]["correct"] == int8["correct"]
