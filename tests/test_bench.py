"""`edgetl bench --baseline`: regressions are injected (fake clock, corrupted logits), never waited for."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgetl.backends.onnxruntime.runner import OnnxRuntimeRunner
from edgetl.measure import compute, latency, memory
from tests.test_cli import run_cli

# Simulated milliseconds per image; real inference still runs, so accuracy is real.
_COST_MS = {"torch_fp32": 30.0, "onnx_fp32": 10.0, "onnx_int8": 5.0}


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A clock that only moves when a model runs, by a fixed cost per image (x an injectable slowdown)."""
    from edgetl.backends.pytorch.runner import TorchRunner

    state: dict = {"now": 0, "slowdown": {}, "corrupt": set()}
    monkeypatch.setattr(latency, "clock", lambda: state["now"])
    # Memory and GEMM-peak probes are real in test_build; here they would only add seconds.
    monkeypatch.setattr(memory, "measure_peak_memory", lambda *a, **k: {"peak_rss_bytes": 1, "model_rss_bytes": 1})
    peak = {"macs_per_second": 1e10, "gmacs_per_second": 10.0, "method": "fake"}
    monkeypatch.setattr(compute, "measure_gemm_peak", lambda threads, precision: peak)
    for cls in (OnnxRuntimeRunner, TorchRunner):
        original = cls.infer

        def infer(self, batch: np.ndarray, _original=original) -> np.ndarray:
            factor = state["slowdown"].get(self.name, 1.0)
            state["now"] += int(_COST_MS[self.name] * factor * len(batch) * 1e6)
            logits = _original(self, batch)
            if self.name in state["corrupt"] and len(batch) > 1:  # the accuracy pass, not timing runs
                logits = logits.copy()
                logits[0] = logits[0][::-1]  # the first image of each batch gets the other class
            return logits

        monkeypatch.setattr(cls, "infer", infer)
    return state


def _bench(capsys, run_dir: Path, out: Path, baseline: Path | None = None) -> tuple[int, str, str]:
    args = ["bench", str(run_dir), "--output", str(out), "--quiet"]
    if baseline is not None:
        args += ["--baseline", str(baseline), "--junit", str(out / "junit.xml")]
    return run_cli(args, capsys)


def _junit(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


@pytest.fixture
def baseline_report(built_run, fake_time, capsys, tmp_path: Path) -> Path:
    code, _, err = _bench(capsys, built_run.run_dir, tmp_path / "baseline")
    assert code == 0, err
    return tmp_path / "baseline" / "report.json"


def test_rerun_of_the_same_model_passes(built_run, fake_time, baseline_report: Path, capsys, tmp_path: Path) -> None:
    code, out, err = _bench(capsys, built_run.run_dir, tmp_path / "again", baseline_report)
    assert code == 0, out + err
    suite = _junit(tmp_path / "again" / "junit.xml")
    assert int(suite.get("failures")) == 0 and int(suite.get("tests")) >= 9
    assert "onnx_int8" in out and "FAIL" not in out
    assert (tmp_path / "again" / "report.md").is_file() and (tmp_path / "again" / "report.html").is_file()


def test_injected_30_percent_slowdown_fails(
    built_run, fake_time, baseline_report: Path, capsys, tmp_path: Path
) -> None:
    fake_time["slowdown"]["onnx_int8"] = 1.3
    code, out, err = _bench(capsys, built_run.run_dir, tmp_path / "slow", baseline_report)
    assert code == 6, out + err
    assert "1 regression" in err or "regression(s)" in err
    assert "+30.0%" in out and "latency" in out
    failures = [c for c in _junit(tmp_path / "slow" / "junit.xml").iter("testcase") if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failures][0] == ("edgetl.bench.onnx_int8", "latency_p50")


def test_injected_accuracy_drop_fails(built_run, fake_time, baseline_report: Path, capsys, tmp_path: Path) -> None:
    fake_time["corrupt"].add("onnx_int8")
    code, out, err = _bench(capsys, built_run.run_dir, tmp_path / "worse", baseline_report)
    assert code == 6, out + err
    suite = _junit(tmp_path / "worse" / "junit.xml")
    failed = {(c.get("classname"), c.get("name")) for c in suite.iter("testcase") if c.find("failure") is not None}
    assert failed == {("edgetl.bench.onnx_int8", "accuracy")}  # >= 2 points: one image of 10 is 10 points


def test_no_measure_compares_the_run_report_and_bad_baselines_are_exit_2(built_run, capsys, tmp_path: Path) -> None:
    run = built_run.run_dir
    code, out, err = run_cli(["bench", str(run), "--no-measure", "--baseline", str(run / "report.json")], capsys)
    assert code == 0, err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    code, _, err = run_cli(["bench", str(run), "--no-measure", "--baseline", str(broken)], capsys)
    assert code == 2 and str(broken) in err and "Traceback" not in err
    code, _, err = run_cli(["bench", str(tmp_path), "--no-measure"], capsys)
    assert code == 2 and "not an edgetl run directory" in err
