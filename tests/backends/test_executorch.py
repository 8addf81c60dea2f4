"""The ExecuTorch backend: .pte fp32 and PT2E int8 from the checkpoint, verified, measured and loadable on a device."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgetl import layout
from edgetl.backends import backend_for, get_backend
from edgetl.data.split import read_split
from edgetl.errors import ModelFileError
from edgetl.packaging import target_record as _target_record
from edgetl.preprocessing import read_preprocessing
from edgetl.targets import get_target
from tests.backends.conftest import HAS_EXECUTORCH, data_root
from tests.helpers import assert_verified_bytes_run, run_cli, tiny_profile, write_profile

needs_executorch = pytest.mark.skipif(not HAS_EXECUTORCH, reason="executorch not installed (edgetl[executorch])")


def labels_of(run) -> list[str]:
    return (run.run_dir / layout.LABELS).read_text().splitlines()


def test_executorch_programs_are_verified_against_pytorch_and_measured(executorch_run) -> None:
    report = executorch_run.report
    fp32, int8 = report["conversions"]["executorch_fp32"], report["conversions"]["executorch_int8"]
    assert fp32["parity"]["against"] == "torch_fp32" and fp32["parity"]["top1_agreement"] == 1.0
    assert fp32["parity"]["max_abs_logit_diff"] < 1e-3
    assert int8["parity"]["against"] == "torch_fp32" and int8["parity"]["images"] > 0
    split = read_split(executorch_run.run_dir / layout.SPLIT)
    pool, _ = split.paths("calibration_pool")
    assert int8["calibration_images"] == min(len(pool), 8)  # the tiny profile's calibration count, never val
    assert "PT2E" in int8["quantization"] and "executorch" in int8["converter"]
    for name in ("executorch_fp32", "executorch_int8"):
        measured = report["artifacts"][name]
        assert measured["execution"]["runtime"] == "executorch" and measured["latency_ms"]["p50"] > 0
        assert measured["execution"]["threads"] == 1 and measured["memory"]["model_rss_bytes"] > 0
    sizes = {name: report["artifacts"][name]["size_bytes"] for name in ("executorch_fp32", "executorch_int8")}
    assert sizes["executorch_int8"] < 0.4 * sizes["executorch_fp32"]  # int8 weights inside the delegate


def test_runner_splits_batches_and_gives_back_the_thread_pool(executorch_run) -> None:
    from executorch.extension.pybindings import portable_lib

    from edgetl.console import native_log

    with native_log():
        before = portable_lib._threadpool_get_thread_count()
    pre = read_preprocessing(executorch_run.run_dir / layout.PREPROCESSING)
    paths, _ = read_split(executorch_run.run_dir / layout.SPLIT).paths("val")
    images = pre.batch(paths[:3])
    path = executorch_run.run_dir / layout.EXECUTORCH_DIR / "model_fp32.pte"
    with backend_for("executorch_fp32").make_runner(path, "executorch_fp32", 1) as runner:
        assert runner.fixed_batch == 1 and runner.describe()["runtime"] == "executorch"
        logits = runner.infer_any_batch(images)
        one = runner.infer(images[1:2])
    assert logits.shape == (3, len(labels_of(executorch_run))) and logits.dtype == np.float32
    np.testing.assert_allclose(logits[1:2], one, atol=1e-6)
    with native_log():
        assert portable_lib._threadpool_get_thread_count() == before


def test_predict_runs_the_int8_program_from_the_run_directory(executorch_run, capsys) -> None:
    paths, _ = read_split(executorch_run.run_dir / layout.SPLIT).paths("val")
    image = paths[0]
    command = ["predict", str(executorch_run.run_dir), str(image), "--artifact", "executorch_int8"]
    code, out, err = run_cli(command, capsys)
    assert code == 0, err
    label = out.strip().split("\t")[1].split()[0]
    assert label in labels_of(executorch_run)


@needs_executorch
def test_a_file_that_is_not_a_program_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.pte"
    bad.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ModelFileError, match=r"model.pte: ExecuTorch cannot load the program"):
        backend_for("executorch_int8").make_runner(bad, "executorch_int8", 1).activate()


def test_missing_executorch_is_one_line_and_exit_2(built_run, tmp_path: Path, monkeypatch, capsys) -> None:
    shutil.copytree(built_run.run_dir, tmp_path / "run")
    before = (tmp_path / "run" / layout.MANIFEST).read_bytes()
    profile = tiny_profile(data_root(built_run.run_dir), tmp_path / "run", convert={"runtimes": ["executorch"]})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name))
    code, _, err = run_cli(["build", str(write_profile(tmp_path / "p.yaml", profile)), "-q"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "convert.runtimes lists executorch, but executorch not installed (pip install 'edgetl[executorch]')" in err
    assert (tmp_path / "run" / layout.MANIFEST).read_bytes() == before


def test_a_bundle_tells_the_shipped_runtimes_device_steps() -> None:
    android = get_target("android-arm64")
    assert _target_record(android, get_backend("litert"))["on_device"] == list(android.on_device)
    steps = _target_record(android, get_backend("executorch"))["on_device"]
    assert steps == list(get_backend("executorch").on_device) and "model.pte" in steps[0]
    # A runtime without its own steps keeps the target's (ONNX Runtime on intel-cpu: the target says both).
    intel = get_target("intel-cpu")
    assert _target_record(intel, get_backend("onnxruntime"))["on_device"] == list(intel.on_device)


def test_verified_bytes_run_and_the_file_is_not_reopened(executorch_run, tmp_path: Path) -> None:
    assert_verified_bytes_run(executorch_run.run_dir, "executorch_int8", tmp_path)
