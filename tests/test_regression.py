"""Baseline comparison: tolerances, skipped-not-compared rules, JUnit output and report loading."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from edgetl.errors import UserInputError
from edgetl.report.regression import (
    Check,
    Tolerances,
    compare_reports,
    format_diff,
    junit_properties,
    load_report,
    passed,
    write_junit,
)


def _artifact(correct: int, p50: float, size: int, ips: float | None) -> dict[str, Any]:
    return {
        "accuracy": correct / 153,
        "correct": correct,
        "total": 153,
        "size_bytes": size,
        "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "batch": 1},
        "throughput": None if ips is None else {"images_per_second": ips, "batch_size": 8},
    }


def baseline_report() -> dict[str, Any]:
    return {
        "schema": "edgetl.report/1",
        "profile": "quickstart",
        "created": "2026-11-23T10:00:00+00:00",
        "deployed_artifact": "onnx_int8",
        "baseline": "torch_fp32",
        "eval": {"split": "val", "images": 153, "classes": ["ants", "bees"]},
        "machine": {
            "cpu": "AMD EPYC 7B13",
            "architecture": "x86_64",
            "usable_cpus": 2,
            "cpu_flags": ["avx", "avx2", "fma"],
            "os": "Linux",
        },
        "settings": {"threads": 1, "throughput_batch_size": 8},
        "artifacts": {
            "onnx_int8": _artifact(149, 10.2, 3_900_000, 120.0),
            "onnx_fp32": _artifact(150, 20.0, 15_000_000, 60.0),
            "torch_fp32": _artifact(150, 30.0, 15_500_000, None),
        },
    }


def _by(checks: list[Check], artifact: str, metric: str) -> Check:
    (found,) = [c for c in checks if c.artifact == artifact and c.metric == metric]
    return found


@pytest.fixture
def base() -> dict[str, Any]:
    return baseline_report()


@pytest.fixture
def cur(base: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(base)


def test_identical_reports_all_pass(base: dict[str, Any], cur: dict[str, Any]) -> None:
    checks = compare_reports(cur, base, Tolerances())
    assert checks and all(c.status == "pass" for c in checks)
    assert passed(checks)
    # accuracy, latency and size for all three; throughput only where measured.
    assert len(checks) == 3 * 3 + 2
    assert {c.metric for c in checks} == {"accuracy", "latency_p50", "size", "throughput"}
    text = format_diff(checks)
    assert "PASSED" in text and "onnx_int8" in text and "latency_p50" in text


def test_latency_slowdown_fails_with_percentage(base: dict[str, Any], cur: dict[str, Any]) -> None:
    cur["artifacts"]["onnx_int8"]["latency_ms"]["p50"] = 10.2 * 1.30
    checks = compare_reports(cur, base, Tolerances())
    check = _by(checks, "onnx_int8", "latency_p50")
    assert check.status == "fail"
    assert "+30.0%" in check.message and "tolerance +15%" in check.message and "REGRESSION" in check.message
    assert check.baseline == pytest.approx(10.2) and check.current == pytest.approx(13.26)
    assert check.change == pytest.approx(0.30)
    assert not passed(checks)
    assert [c for c in checks if c.status == "fail"] == [check]
    assert "FAIL" in format_diff(checks) and "+30.0%" in format_diff(checks)


def test_latency_exactly_at_tolerance_passes(base: dict[str, Any], cur: dict[str, Any]) -> None:
    cur["artifacts"]["onnx_fp32"]["latency_ms"]["p50"] = 20.0 * 1.15
    assert _by(compare_reports(cur, base, Tolerances()), "onnx_fp32", "latency_p50").status == "pass"


def test_other_percentile(base: dict[str, Any], cur: dict[str, Any]) -> None:
    cur["artifacts"]["onnx_int8"]["latency_ms"]["p99"] *= 1.5
    checks = compare_reports(cur, base, Tolerances(latency_percentile="p99"))
    assert _by(checks, "onnx_int8", "latency_p99").status == "fail"
    assert "latency p99" in _by(checks, "onnx_int8", "latency_p99").message


def test_accuracy_drop_fails(base: dict[str, Any], cur: dict[str, Any]) -> None:
    entry = cur["artifacts"]["onnx_int8"]
    entry["correct"], entry["accuracy"] = 146, 146 / 153
    checks = compare_reports(cur, base, Tolerances())
    check = _by(checks, "onnx_int8", "accuracy")
    assert check.status == "fail"
    assert check.change == pytest.approx(-300 / 153)
    assert "146/153" in check.message and "149/153" in check.message and "-1.96 points" in check.message
    assert not passed(checks)
    # A 1-image drop (0.65 points) is inside the default 1-point tolerance.
    entry["correct"], entry["accuracy"] = 148, 148 / 153
    assert _by(compare_reports(cur, base, Tolerances()), "onnx_int8", "accuracy").status == "pass"


def test_size_growth_fails(base: dict[str, Any], cur: dict[str, Any]) -> None:
    cur["artifacts"]["onnx_int8"]["size_bytes"] = int(3_900_000 * 1.10)
    check = _by(compare_reports(cur, base, Tolerances()), "onnx_int8", "size")
    assert check.status == "fail" and "+10.0%" in check.message and "tolerance +5%" in check.message


def test_throughput_drop_fails(base: dict[str, Any], cur: dict[str, Any]) -> None:
    cur["artifacts"]["onnx_int8"]["throughput"]["images_per_second"] = 80.0
    check = _by(compare_reports(cur, base, Tolerances()), "onnx_int8", "throughput")
    assert check.status == "fail" and "-33.3%" in check.message


def test_faster_is_improved_and_passes(base: dict[str, Any], cur: dict[str, Any]) -> None:
    cur["artifacts"]["onnx_int8"]["latency_ms"]["p50"] = 10.2 * 0.70
    checks = compare_reports(cur, base, Tolerances())
    check = _by(checks, "onnx_int8", "latency_p50")
    assert check.status == "improved" and "-30.0%" in check.message
    assert passed(checks)
    assert "improved" in format_diff(checks)


def test_different_machine_skips_timings_but_checks_accuracy(base: dict[str, Any], cur: dict[str, Any]) -> None:
    cur["machine"]["cpu"] = "Intel Xeon Platinum 8480"
    cur["machine"]["cpu_flags"] = ["avx", "avx2", "avx512f", "fma"]
    cur["artifacts"]["onnx_int8"]["latency_ms"]["p50"] = 50.0
    entry = cur["artifacts"]["onnx_int8"]
    entry["correct"], entry["accuracy"] = 140, 140 / 153
    checks = compare_reports(cur, base, Tolerances())
    latency = _by(checks, "onnx_int8", "latency_p50")
    assert latency.status == "skipped"
    assert "Intel Xeon" in latency.message and "avx512f" in latency.message
    assert _by(checks, "onnx_int8", "throughput").status == "skipped"
    assert _by(checks, "onnx_int8", "accuracy").status == "fail"
    assert _by(checks, "onnx_int8", "size").status == "pass"
    # Explicitly asked to compare across machines: the slowdown is a failure again.
    forced = compare_reports(cur, base, Tolerances(), compare_across_machines=True)
    assert _by(forced, "onnx_int8", "latency_p50").status == "fail"


def test_different_threads_skip_timings(base: dict[str, Any], cur: dict[str, Any]) -> None:
    cur["settings"]["threads"] = 4
    check = _by(compare_reports(cur, base, Tolerances()), "onnx_fp32", "latency_p50")
    assert check.status == "skipped" and "threads 4 vs 1" in check.message


def test_different_eval_set_skips_accuracy(base: dict[str, Any], cur: dict[str, Any]) -> None:
    cur["eval"]["classes"] = ["ants", "bees", "wasps"]
    cur["artifacts"]["onnx_int8"]["accuracy"] = 0.5
    checks = compare_reports(cur, base, Tolerances())
    check = _by(checks, "onnx_int8", "accuracy")
    assert check.status == "skipped" and "evaluation sets differ" in check.message
    assert _by(checks, "onnx_int8", "latency_p50").status == "pass"
    assert passed(checks)


def test_missing_and_new_artifacts(base: dict[str, Any], cur: dict[str, Any]) -> None:
    del cur["artifacts"]["onnx_int8"]
    cur["artifacts"]["onnx_fp16"] = _artifact(150, 15.0, 7_000_000, None)
    checks = compare_reports(cur, base, Tolerances())
    missing = _by(checks, "onnx_int8", "missing")
    assert missing.status == "fail" and "missing" in missing.message
    assert _by(checks, "onnx_fp16", "new").status == "skipped"
    assert not passed(checks)


def test_artifact_selection(base: dict[str, Any], cur: dict[str, Any]) -> None:
    checks = compare_reports(cur, base, Tolerances(), artifacts=["onnx_int8"])
    assert {c.artifact for c in checks} == {"onnx_int8"}
    with pytest.raises(UserInputError, match="onnx_int4"):
        compare_reports(cur, base, Tolerances(), artifacts=["onnx_int4"])


def test_invalid_tolerances_are_input_errors() -> None:
    with pytest.raises(UserInputError):
        Tolerances(latency_relative=-0.1)
    with pytest.raises(UserInputError):
        Tolerances(latency_percentile="median")


def test_junit_counts_and_structure(base: dict[str, Any], cur: dict[str, Any], tmp_path: Path) -> None:
    cur["artifacts"]["onnx_int8"]["latency_ms"]["p50"] = 10.2 * 1.30  # fail
    cur["artifacts"]["onnx_fp32"]["size_bytes"] = 16_000_000  # fail (+6.7%)
    cur["artifacts"]["onnx_fp32"]["throughput"] = None  # skipped: not measured now
    checks = compare_reports(cur, base, Tolerances())
    out = write_junit(checks, tmp_path / "ci" / "bench.xml", properties=junit_properties(cur, base, Tolerances()))
    assert out == tmp_path / "ci" / "bench.xml"
    assert [p.name for p in out.parent.iterdir()] == ["bench.xml"]  # no temp file left behind
    suite = ET.parse(out).getroot()
    assert suite.tag == "testsuite" and suite.get("name") == "edgetl.bench"
    assert suite.get("tests") == str(len(checks)) == str(len(suite.findall("testcase")))
    assert suite.get("failures") == "2" and suite.get("skipped") == "1"
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    failure = cases[("edgetl.bench.onnx_int8", "latency_p50")].find("failure")
    assert failure is not None and "+30.0%" in failure.get("message", "")
    assert "baseline: 10.20 ms" in (failure.text or "")
    assert cases[("edgetl.bench.onnx_fp32", "throughput")].find("skipped") is not None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["baseline.profile"] == "quickstart"
    assert props["baseline.created"] == "2026-11-23T10:00:00+00:00"


def test_check_to_dict_is_json(base: dict[str, Any], cur: dict[str, Any]) -> None:
    data = [c.to_dict() for c in compare_reports(cur, base, Tolerances())]
    assert json.loads(json.dumps(data))[0].keys() >= {
        "artifact",
        "metric",
        "baseline",
        "current",
        "unit",
        "limit_description",
        "status",
        "message",
    }


def test_load_report_roundtrip_and_run_dir(base: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps(base), encoding="utf-8")
    assert load_report(tmp_path / "report.json") == base
    assert load_report(tmp_path) == base


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        (json.dumps({"schema": "other/1", "artifacts": {}}), "schema 'other/1'"),
        (json.dumps({"artifacts": {}}), "no 'schema'"),
        (json.dumps({"schema": "edgetl.report/1"}), "no 'artifacts'"),
        (json.dumps([1, 2]), "not an edgetl report"),
    ],
)
def test_load_report_errors(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "baseline-report.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UserInputError) as info:
        load_report(path)
    assert info.value.exit_code == 2
    assert expected in str(info.value) and "baseline-report.json" in str(info.value)
    assert "\n" not in info.value.message


# -- fail closed: a gate that compared nothing never passes ----------------------------------------


def test_a_percentile_reports_do_not_record_is_refused() -> None:
    with pytest.raises(UserInputError, match="p50, p90, p99"):
        Tolerances(latency_percentile="p95")


@pytest.mark.parametrize("artifacts", [{}, {"onnx_int8": "fast"}, {"onnx_int8": None}])
def test_a_baseline_that_gives_nothing_to_compare_fails(base: dict[str, Any], artifacts: Any) -> None:
    baseline = {**base, "artifacts": artifacts}
    current = {**base, "artifacts": artifacts}
    checks = compare_reports(current, baseline, Tolerances())
    assert not passed(checks)
    assert any(c.metric == "compared" and "nothing was compared" in c.message for c in checks)


def test_every_number_skipped_fails_but_one_compared_number_passes(base: dict[str, Any], cur: dict[str, Any]) -> None:
    only = {"onnx_int8": {"latency_ms": {"p50": 1.0}}}  # no accuracy, no size: only a latency to compare
    other_machine = {**cur, "machine": {**cur["machine"], "cpu": "elsewhere"}, "artifacts": only}
    assert not passed(compare_reports(other_machine, {**base, "artifacts": only}, Tolerances()))
    assert passed(compare_reports({**cur, "artifacts": only}, {**base, "artifacts": only}, Tolerances()))


def test_an_unknown_report_version_is_refused(base: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**base, "schema": "edgetl.report/999"}), encoding="utf-8")
    with pytest.raises(UserInputError, match="edgetl.report/999.*cannot read"):
        load_report(path)


def test_a_fifo_as_baseline_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "baseline.json"
    os.mkfifo(fifo)
    with pytest.raises(UserInputError, match="not a regular file"):
        load_report(fifo)
