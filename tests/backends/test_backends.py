"""The backend catalogue, the OpenVINO backend, and how `deploy: fastest` chooses what ships."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgetl import layout
from edgetl.backends import ARTIFACTS, BACKENDS, artifact, backend_for, get_backend
from edgetl.backends.base import Backend, Runner
from edgetl.bundle import compare_with_reference, read_bundle
from edgetl.errors import ProfileError, UserInputError, VerificationError
from edgetl.measure.select import choose_deployed
from edgetl.plan import build_plan
from edgetl.profile import Profile, load_profile
from edgetl.runtime import load
from tests.backends.conftest import data_root
from tests.helpers import bundle_reference_check, run_cli, tiny_profile, write_profile

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")


def test_catalogue_gives_every_artifact_one_file_and_a_registered_backend() -> None:
    files = [a.file for a in ARTIFACTS.values() if a.backend != "tensorrt"]  # engines share the bundle's file
    assert len(files) == len(set(files))
    for name, item in ARTIFACTS.items():
        assert item.name == name and item.backend in BACKENDS
        assert item.source is None or item.source in ARTIFACTS
        assert item in BACKENDS[item.backend].artifacts
        assert issubclass(BACKENDS[item.backend].runner_class(), Runner)  # importing a runner imports no runtime
    assert backend_for("openvino_int8").name == "openvino" and artifact("onnx_int8").file == layout.ONNX_INT8


def test_unknown_names_are_one_line_errors_with_a_suggestion() -> None:
    with pytest.raises(UserInputError, match="did you mean 'onnx_int8'"):
        artifact("onnx_int9")
    with pytest.raises(UserInputError, match="did you mean 'openvino'"):
        get_backend("openvin")


def test_a_missing_runtime_says_how_to_install_it() -> None:
    absent = Backend(
        "ghost", "Ghost", (), "edgetl.backends.base:Runner", requires=("no_such_module_xyz",), extra="ghost"
    )
    assert absent.unavailable() == "no_such_module_xyz not installed (pip install 'edgetl[ghost]')"
    assert get_backend("onnxruntime").unavailable() is None


def _profile(tmp_path: Path, **overrides: object) -> Profile:
    return Profile.model_validate(tiny_profile(tmp_path, tmp_path / "run", **overrides))


def test_intel_cpu_converts_to_openvino_and_deploys_the_fastest(tmp_path: Path) -> None:
    profile = _profile(tmp_path, target="intel-cpu")
    assert build_plan(profile).convert_runtimes == ["openvino"] and build_plan(profile).deploy_mode == "fastest"
    assert build_plan(profile).produced_artifacts == [
        "torch_fp32",
        "onnx_fp32",
        "onnx_int8",
        "openvino_fp32",
        "openvino_int8",
    ]
    plain = _profile(tmp_path)
    assert (
        build_plan(plain).produced_artifacts == ["torch_fp32", "onnx_fp32", "onnx_int8"]
        and build_plan(plain).deploy_mode == "target"
    )
    pinned = _profile(tmp_path, target="intel-cpu", budgets={"artifact": "onnx_int8"})
    assert build_plan(pinned).deploy_mode == "target" and build_plan(pinned).deployed_artifact == "onnx_int8"
    no_int8 = _profile(tmp_path, convert={"runtimes": ["openvino"]}, optimize={"int8": {"enabled": False}})
    assert (
        "openvino_int8" not in build_plan(no_int8).produced_artifacts
        and "openvino_fp32" in build_plan(no_int8).produced_artifacts
    )


def test_profile_errors_name_the_field(tmp_path: Path) -> None:
    bad_runtime = write_profile(
        tmp_path / "a.yaml", tiny_profile(tmp_path, tmp_path / "run", convert={"runtimes": ["tflite"]})
    )
    with pytest.raises(ProfileError, match=r"convert\.runtimes.*'tflite' cannot be converted to; choose from openvino"):
        load_profile(bad_runtime)
    not_made = write_profile(
        tmp_path / "b.yaml",
        tiny_profile(tmp_path, tmp_path / "run", benchmark={"artifacts": ["torch_fp32", "onnx_fp32", "openvino_fp32"]}),
    )
    with pytest.raises(ProfileError, match="lists openvino_fp32, which needs openvino in convert.runtimes"):
        load_profile(not_made)


def _measured(p50: dict[str, float], predictions: dict[str, list[int]], labels: list[int]) -> dict:
    artifacts = {}
    for name, ms in p50.items():
        correct = int(np.sum(np.asarray(predictions[name]) == np.asarray(labels)))
        artifacts[name] = {
            "predictions": predictions[name],
            "accuracy": correct / len(labels),
            "latency_ms": {"p50": ms, "p90": ms * 1.1, "p99": ms * 1.2},
            "size_bytes": 4_000_000 if name.endswith("int8") else 14_000_000,
        }
    return {"artifacts": artifacts}


LABELS = [0, 1] * 50


def test_fastest_passing_candidate_ships_and_the_runner_up_is_named(tmp_path: Path) -> None:
    same = list(LABELS)
    results = _measured(
        {"torch_fp32": 20.0, "onnx_fp32": 6.0, "onnx_int8": 3.0, "openvino_fp32": 5.0, "openvino_int8": 2.5},
        {name: same for name in ("torch_fp32", "onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_int8")},
        LABELS,
    )
    decision = choose_deployed(results, _profile(tmp_path, target="intel-cpu"))
    assert decision["artifact"] == "openvino_int8" and decision["runner_up"] == "onnx_int8"
    assert "1.20x faster than the runner-up onnx_int8" in decision["reason"]
    assert [c["artifact"] for c in decision["candidates"]][:2] == ["openvino_int8", "onnx_int8"]
    assert "torch_fp32" not in [c["artifact"] for c in decision["candidates"]]


def test_a_converted_model_that_disagrees_with_its_source_never_ships(tmp_path: Path) -> None:
    flipped = [1 - label if i < 5 else label for i, label in enumerate(LABELS)]  # 95 % agreement
    results = _measured(
        {"torch_fp32": 20.0, "onnx_fp32": 6.0, "onnx_int8": 3.0, "openvino_fp32": 5.0, "openvino_int8": 2.0},
        {
            "torch_fp32": LABELS,
            "onnx_fp32": LABELS,
            "onnx_int8": LABELS,
            "openvino_fp32": LABELS,
            "openvino_int8": flipped,
        },
        LABELS,
    )
    decision = choose_deployed(results, _profile(tmp_path, target="intel-cpu"))
    assert decision["artifact"] == "onnx_int8"
    loser = next(c for c in decision["candidates"] if c["artifact"] == "openvino_int8")
    assert not loser["passed"] and "agrees with onnx_int8 on 95.0 % of val images (< 99 %)" in loser["failed"][0]
    with pytest.raises(VerificationError, match="openvino_int8: agrees with onnx_int8 on 95.0 %"):
        choose_deployed(results, _profile(tmp_path, target="intel-cpu", benchmark={"deploy": "target"}))


def test_budgets_decide_which_candidates_pass(tmp_path: Path) -> None:
    results = _measured(
        {"torch_fp32": 20.0, "onnx_fp32": 6.0, "onnx_int8": 3.0},
        {"torch_fp32": LABELS, "onnx_fp32": LABELS, "onnx_int8": LABELS},
        LABELS,
    )
    fastest = {"benchmark": {"deploy": "fastest"}}
    assert choose_deployed(results, _profile(tmp_path, **fastest))["artifact"] == "onnx_int8"
    too_big = choose_deployed(results, _profile(tmp_path, **fastest, budgets={"max_size_mb": 1.0}))
    assert too_big["artifact"] == "onnx_int8" and "no candidate passed" in too_big["reason"]
    assert all(not c["passed"] for c in too_big["candidates"])


@needs_openvino
def test_openvino_ir_of_the_validated_int8_model_predicts_like_onnx_runtime(built_run, tmp_path: Path) -> None:
    from edgetl.preprocessing import read_preprocessing

    source = built_run.run_dir / layout.ONNX_INT8
    record = backend_for("openvino_int8").convert(source, tmp_path / "model_int8.xml", {})
    assert record["compress_to_fp16"] is False and (tmp_path / "model_int8.bin").is_file()
    bundle = read_bundle(built_run.run_dir / "bundle")
    images = read_preprocessing(built_run.run_dir / layout.PREPROCESSING).batch(
        [bundle.root / item["file"] for item in bundle.reference()["images"]]
    )
    with backend_for("openvino_int8").make_runner(tmp_path / "model_int8.xml", "openvino_int8", 1) as runner:
        logits = runner.infer_any_batch(images)
        described = runner.describe()
    check = compare_with_reference(logits, bundle.reference(), min_agreement=100.0)
    assert check["passed"], check
    assert described["runtime"] == "openvino" and described["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    # Verified bytes are what runs: with them in memory, the files on disk are never reopened.
    xml, weights = tmp_path / "model_int8.xml", tmp_path / "model_int8.bin"
    verified = {xml: xml.read_bytes(), weights: weights.read_bytes()}
    xml.write_text("<not-a-model/>")
    weights.unlink()
    with backend_for("openvino_int8").make_runner(xml, "openvino_int8", 1, verified=verified) as runner:
        assert np.array_equal(runner.infer_any_batch(images), logits)


@pytest.fixture(scope="module")
def intel_run(built_run, tmp_path_factory: pytest.TempPathFactory):
    """The tiny build re-targeted at intel-cpu: data, training, export and int8 are reused from the cache."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino not installed")
    from edgetl.console import Log
    from edgetl.pipeline import build

    base = tmp_path_factory.mktemp("intel")
    shutil.copytree(built_run.run_dir, base / "run")
    measured = {"memory": True, "compute_peak": True}  # peak memory and utilization are checked here
    profile = tiny_profile(data_root(built_run.run_dir), base / "run", target="intel-cpu", benchmark=measured)
    return build(write_profile(base / "intel.yaml", profile), log=Log(quiet=True))


def test_intel_cpu_build_measures_both_runtimes_and_ships_the_faster(intel_run, capsys) -> None:
    assert intel_run.results["optimize"].skipped  # the same validated int8 model, converted
    report = intel_run.report
    assert {"onnx_int8", "openvino_int8", "openvino_fp32"} <= set(report["artifacts"])
    decision = report["deployment"]
    assert decision["mode"] == "fastest" and report["deployed_artifact"] == decision["artifact"]
    passing = [c for c in decision["candidates"] if c["passed"]]
    assert decision["artifact"] == min(passing, key=lambda c: c["p50_ms"])["artifact"]
    ir = report["artifacts"]["openvino_int8"]
    assert ir["execution"]["runtime"] == "openvino" and ir["memory"]["model_rss_bytes"] > 0
    # Measured, not estimated: a fresh process per artefact; utilization against the GEMM peak measured here.
    for name in ("torch_fp32", "onnx_fp32", "onnx_int8", "openvino_int8"):
        memory = report["artifacts"][name]["memory"]
        assert memory["peak_rss_bytes"] >= memory["model_rss_bytes"] > 0, name
    assert report["artifacts"]["torch_fp32"]["memory"]["runtime"] == "torch"
    assert 0 < report["artifacts"]["onnx_int8"]["compute"]["utilization"]["fraction"] < 1.5
    assert report["peaks"]["int8"]["gmacs_per_second"] > 0 and "MatMul" in report["peaks"]["int8"]["method"]
    assert ir["size_bytes"] > (intel_run.run_dir / layout.OPENVINO_DIR / "model_int8.xml").stat().st_size  # + .bin
    assert report["conversions"]["openvino_int8"]["parity"]["top1_agreement"] == 1.0
    manifest = json.loads((intel_run.run_dir / layout.MANIFEST).read_text())
    assert manifest["deployed_artifact"] == decision["artifact"]
    assert f"why `{decision['artifact']}` ships (fastest)" in (intel_run.run_dir / layout.REPORT_MD).read_text()

    bundle = read_bundle(intel_run.run_dir / layout.BUNDLE_DIR)
    assert bundle.info["model"]["artifact"] == decision["artifact"]
    assert bundle_reference_check(bundle.root)["max_abs_logit_diff"] < 1e-4
    code, _, _ = run_cli(["bench", str(bundle.root), "-q"], capsys)
    assert code == 0 and (bundle.root / "bench" / "bench.json").is_file()


def test_intel_run_loads_either_runtime_by_artifact_name(intel_run) -> None:
    for name in ("openvino_int8", "onnx_int8"):
        predictor = load(intel_run.run_dir, artifact=name)
        try:
            assert predictor.runner.name == name and predictor.runner.describe()["runtime"] in (
                "openvino",
                "onnxruntime",
            )
        finally:
            predictor.close()


def test_a_runtime_missing_at_build_time_is_one_line_and_exit_2(built_run, tmp_path: Path, monkeypatch, capsys) -> None:
    shutil.copytree(built_run.run_dir, tmp_path / "run")
    before = (tmp_path / "run" / layout.MANIFEST).read_bytes()
    intel = tiny_profile(data_root(built_run.run_dir), tmp_path / "run", target="intel-cpu")
    profile = write_profile(tmp_path / "p.yaml", intel)
    monkeypatch.setattr(Backend, "unavailable", lambda self: "openvino not installed (pip install 'edgetl[openvino]')")
    code, _, err = run_cli(["build", str(profile), "-q"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "convert.runtimes lists openvino, but openvino not installed" in lines[0]
    assert (tmp_path / "run" / layout.MANIFEST).read_bytes() == before  # the earlier good run is untouched
