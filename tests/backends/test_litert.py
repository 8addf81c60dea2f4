"""The LiteRT backend: .tflite fp32 from the checkpoint, full-integer int8 on the calibration pool, run and shipped."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from edgetl import layout
from edgetl.backends import backend_for
from edgetl.backends.litert.runner import dequantize, quantize
from edgetl.bundle import read_bundle
from edgetl.data.split import read_split
from edgetl.plan import build_plan
from tests.backends.conftest import data_root
from tests.helpers import assert_verified_bytes_run, bundle_reference_check, run_cli, tiny_profile, write_profile


def test_int8_io_is_quantized_with_the_tensors_own_scale_and_zero_point() -> None:
    details = {"dtype": np.int8, "quantization": (0.5, -3)}
    values = np.array([-100.0, -1.0, 0.0, 0.26, 1.0, 100.0], dtype=np.float32)
    q = quantize(values, details)
    assert q.dtype == np.int8 and q.tolist() == [-128, -5, -3, -2, -1, 127]  # clipped at both ends, rounded
    assert dequantize(q, details).tolist() == [-62.5, -1.0, 0.0, 0.5, 1.0, 65.0]
    floats = {"dtype": np.float32, "quantization": (0.0, 0)}
    assert quantize(values, floats).dtype == np.float32 and np.array_equal(dequantize(values, floats), values)


def test_android_target_converts_to_litert_and_int8_follows_the_int8_switch(tmp_path: Path) -> None:
    from edgetl.profile import load_profile

    android = tiny_profile(tmp_path, tmp_path / "r", target="android-arm64")
    profile = load_profile(write_profile(tmp_path / "a.yaml", android)).profile
    assert build_plan(profile).convert_runtimes == ["litert"] and build_plan(profile).deployed_artifact == "litert_int8"
    assert build_plan(profile).produced_artifacts[-2:] == ["litert_fp32", "litert_int8"]
    no_int8 = load_profile(
        write_profile(
            tmp_path / "b.yaml",
            tiny_profile(tmp_path, tmp_path / "r", target="android-arm64", optimize={"int8": {"enabled": False}}),
        )
    ).profile
    assert (
        "litert_fp32" in build_plan(no_int8).produced_artifacts
        and "litert_int8" not in build_plan(no_int8).produced_artifacts
    )


def test_litert_build_converts_verifies_measures_and_ships_int8(litert_run) -> None:
    assert litert_run.results["finetune"].skipped  # converted from the same checkpoint
    report = litert_run.report
    assert report["deployed_artifact"] == "litert_int8"
    conversions = report["conversions"]
    fp32, int8 = conversions["litert_fp32"], conversions["litert_int8"]
    assert fp32["parity"]["against"] == "torch_fp32" and fp32["parity"]["top1_agreement"] == 1.0
    assert fp32["parity"]["max_abs_logit_diff"] < 1e-3
    assert int8["parity"]["against"] == "litert_fp32" and int8["parity"]["images"] > 0
    split = read_split(litert_run.run_dir / layout.SPLIT)
    pool, _ = split.paths("calibration_pool")
    resolved = json.loads((litert_run.run_dir / layout.MANIFEST).read_text())["profile"]["resolved"]
    assert int8["calibration_images"] == min(len(pool), resolved["optimize"]["int8"]["calibration_images"])
    for name in ("litert_fp32", "litert_int8"):
        measured = report["artifacts"][name]
        assert measured["execution"]["runtime"] == "litert" and measured["latency_ms"]["p50"] > 0
        assert measured["memory"]["model_rss_bytes"] > 0
    fp32_size = report["artifacts"]["litert_fp32"]["size_bytes"]
    assert report["artifacts"]["litert_int8"]["size_bytes"] < 0.4 * fp32_size  # int8 weights, not a copy

    int8_file = litert_run.run_dir / layout.LITERT_DIR / "model_int8.tflite"
    with backend_for("litert_int8").make_runner(int8_file, "litert_int8", 1) as runner:
        assert runner.describe()["io"] == "int8" and runner.fixed_batch == 1


def test_litert_bundle_reproduces_its_reference_and_benches(litert_run, capsys) -> None:
    bundle = read_bundle(litert_run.run_dir / layout.BUNDLE_DIR)
    assert bundle.info["model"]["file"] == "model.tflite" and bundle.info["target"]["runtime"] == "litert"
    assert bundle_reference_check(bundle.root)["max_abs_logit_diff"] < 1e-5
    code, _, _ = run_cli(["bench", str(bundle.root), "-q"], capsys)
    assert code == 0 and (bundle.root / "bench" / "bench.json").is_file()


def test_a_missing_litert_converter_is_one_line_and_exit_2(built_run, tmp_path: Path, monkeypatch, capsys) -> None:
    shutil.copytree(built_run.run_dir, tmp_path / "run")
    before = (tmp_path / "run" / layout.MANIFEST).read_bytes()
    profile = tiny_profile(data_root(built_run.run_dir), tmp_path / "run", target="android-arm64")
    started = time.perf_counter()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "litert_torch" else real(name))
    code, _, err = run_cli(["build", str(write_profile(tmp_path / "p.yaml", profile)), "-q"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    expected = "convert.runtimes lists litert, but litert_torch not installed (pip install 'edgetl[litert-convert]')"
    assert expected in lines[0]
    assert time.perf_counter() - started < 20  # refused before any stage runs, not after the fine-tune
    assert (tmp_path / "run" / layout.MANIFEST).read_bytes() == before


def test_targets_print_install_commands_as_written(capsys) -> None:
    code, out, _ = run_cli(["targets", "android-arm64"], capsys)
    assert code == 0 and "pip install 'edgetl[litert]'" in out  # not eaten as Rich markup
    assert "Not run on Android or an Edge TPU here" in out


def test_the_quantizers_progress_bar_stays_out_of_the_build_log() -> None:
    pytest.importorskip("ai_edge_quantizer")
    from ai_edge_quantizer.utils import progress_utils

    from edgetl.backends.litert.convert import _quiet_tqdm

    with _quiet_tqdm():
        with progress_utils.ProgressBar(total_steps=500, description="Running Calibration:") as bar:
            assert bar._progress_bar.disable
    with progress_utils.ProgressBar(total_steps=500) as bar:  # put back afterwards
        assert not bar._progress_bar.disable


def test_verified_bytes_run_and_the_file_is_not_reopened(litert_run, tmp_path: Path) -> None:
    assert_verified_bytes_run(litert_run.run_dir, "litert_int8", tmp_path)
