"""The README's quickstart, end to end on the real hymenoptera set (about two minutes on 2 cores).

Accuracy targets from issue #3 are asserted; latency ratios are not (they depend on the CPU and
machine load: `benchmarks/quickstart.py` measures and records them instead).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgetl
from edgetl.pipeline import STAGE_ORDER

REPO = Path(__file__).resolve().parents[1]
LIGHT_TIMING = {"warmup": 2, "iterations": 10, "rounds": 2, "batch_sizes": [1], "memory": False, "compute_peak": False}


@pytest.mark.slow
def test_quickstart_meets_the_accuracy_targets(hymenoptera: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGETL_DATA_HOME", str(hymenoptera.parent))
    # The README's profile through the Python API; only the timing loops are shortened (latency is not asserted).
    run = edgetl.build(
        REPO / "profiles/quickstart.yaml", output_dir=tmp_path / "run", quiet=True, benchmark=LIGHT_TIMING
    )
    report = json.loads((tmp_path / "run/report.json").read_text())
    assert run.deployed.name == "onnx_int8" and run.deployed.accuracy == report["artifacts"]["onnx_int8"]["accuracy"]
    assert run.reused_stages == ()
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
    assert report["training"]["head_init"]["mode"] == "imagenet"

    # An unchanged re-run: every stage is up to date, nothing is rebuilt, seconds not minutes.
    rerun = edgetl.build(
        REPO / "profiles/quickstart.yaml", output_dir=tmp_path / "run", quiet=True, benchmark=LIGHT_TIMING
    )
    assert set(rerun.reused_stages) == set(STAGE_ORDER), rerun.reused_stages
    assert rerun.seconds is not None and rerun.seconds < 15, f"{rerun.seconds:.1f} s for an up-to-date build"
    rebuilt = json.loads((tmp_path / "run/report.json").read_text())
    assert rebuilt["artifacts"]["onnx_int8"]["correct"] == int8["correct"]
