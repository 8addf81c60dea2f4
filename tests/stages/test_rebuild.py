"""Stage cache, failure safety, budgets and locking, on copies of the session's tiny build."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgetl.console import Log
from edgetl.errors import BudgetExceeded, DataError, ProfileError, RunLockedError, VerificationError
from edgetl.files import sha256_file
from edgetl.lock import RunLock
from edgetl.pipeline import build
from tests.helpers import deep_merge, make_dataset, published_hashes, tiny_profile, write_profile

QUIET = Log(quiet=True)


def clone(built_run, tmp_path: Path, **overrides) -> Path:
    """Copy the session's run directory (cache included) and write a profile pointing at the copy."""
    run = tmp_path / "run"
    shutil.copytree(built_run.run_dir, run)
    profile = yaml.safe_load((built_run.run_dir / "profile.yaml").read_text())
    profile = deep_merge(profile, {"output_dir": str(run), **overrides})
    return write_profile(tmp_path / "profile.yaml", profile)


def test_unchanged_rerun_skips_every_stage(built_run, tmp_path: Path) -> None:
    profile = clone(built_run, tmp_path)
    before = published_hashes(tmp_path / "run")
    outcome = build(profile, log=QUIET)
    assert all(result.skipped for result in outcome.results.values())
    after = published_hashes(tmp_path / "run")
    for relative in before:
        if relative not in ("manifest.json", "report.json", "report.md", "profile.yaml"):  # timestamps, new output_dir
            assert after[relative] == before[relative], relative
    assert outcome.seconds < 10


def test_quantization_change_reruns_only_optimize_package_and_benchmark(built_run, tmp_path: Path) -> None:
    profile = clone(built_run, tmp_path, optimize={"int8": {"calibration_images": 6}})
    outcome = build(profile, log=QUIET)
    ran = sorted(name for name, result in outcome.results.items() if not result.skipped)
    assert ran == ["benchmark", "optimize", "package"]  # the bundle ships the new int8 model
    quantization = json.loads((tmp_path / "run/optimize/quantization.json").read_text())
    assert len(quantization["calibration_images"]) == 6
    caches = sorted(p.name for p in (tmp_path / "run/.edgetl/cache/optimize").iterdir())
    assert len(caches) == 1, f"stale cache entries kept: {caches}"


def test_a_failing_stage_leaves_the_previous_build_intact(built_run, tmp_path: Path) -> None:
    profile = clone(built_run, tmp_path, export={"parity_tolerance": 1e-12}, finetune={"epochs": 2})
    before = published_hashes(tmp_path / "run")
    with pytest.raises(VerificationError, match="does not match PyTorch"):
        build(profile, log=QUIET)
    assert published_hashes(tmp_path / "run") == before
    leftovers = [p for p in (tmp_path / "run/.edgetl/cache").rglob("*.tmp-*")]
    assert not leftovers, leftovers
    assert not (tmp_path / "run/.edgetl/lock").exists(), "lock not released after a failure"


def test_violated_budget_writes_the_report_then_fails(built_run, tmp_path: Path) -> None:
    profile = clone(
        built_run, tmp_path, budgets={"max_latency_ms": 0.001, "latency_percentile": "p50", "max_size_mb": 100}
    )
    outcome = build(profile, log=QUIET)
    assert not any(not r.skipped for name, r in outcome.results.items() if name != "benchmark"), "budgets re-ran stages"
    report = json.loads((tmp_path / "run/report.json").read_text())
    assert report["passed"] is False
    failed = [b for b in report["budgets"] if not b["passed"]]
    assert [b["name"] for b in failed] == ["max_latency_ms"]
    assert "exceeds 0.001 ms by" in failed[0]["message"]
    with pytest.raises(BudgetExceeded) as caught:
        outcome.raise_for_budgets()
    assert caught.value.exit_code == 3 and "max_latency_ms" in str(caught.value)


def test_second_build_into_a_locked_run_directory_refuses(built_run, tmp_path: Path) -> None:
    profile = clone(built_run, tmp_path)
    with RunLock(tmp_path / "run"):  # held by this (live) process
        with pytest.raises(RunLockedError, match="is building into this run directory"):
            build(profile, log=QUIET)


def test_two_concurrent_cli_builds_the_second_refuses(built_run, tmp_path: Path) -> None:
    """A long retraining holds the run directory; a second build is refused; Ctrl-C then loses nothing."""
    profile = clone(built_run, tmp_path)
    retrain = yaml.safe_load(profile.read_text())
    retrain["finetune"].update(epochs=60, early_stopping={"patience": None})
    retrain = write_profile(tmp_path / "retrain.yaml", retrain)
    published = published_hashes(tmp_path / "run")
    env = {**os.environ, "EDGETL_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "edgetl", "train", str(retrain)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )  # fmt: skip
    assert first.stderr is not None
    for line in first.stderr:  # training has started: the lock is held
        if "epoch  1/60" in line:
            break
    second = subprocess.run(
        [sys.executable, "-m", "edgetl", "build", str(profile), "-q"], capture_output=True, text=True, env=env
    )
    still_running = first.poll() is None
    first.send_signal(signal.SIGINT)
    first_err = first.stderr.read()
    assert first.wait(timeout=60) == 130, first_err
    assert still_running, "the first build ended before the second started; the test proved nothing"
    assert second.returncode == 5
    assert second.stderr.count("\n") == 1 and f"process {first.pid} on " in second.stderr, second.stderr
    assert not (tmp_path / "run/.edgetl/lock").exists()
    assert published_hashes(tmp_path / "run") == published, "the interrupted retraining changed the published run"


def test_lock_left_by_a_dead_process_is_taken_over(built_run, tmp_path: Path) -> None:
    profile = clone(built_run, tmp_path)
    lock = tmp_path / "run/.edgetl/lock"
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    import socket

    lock.write_text(json.dumps({"pid": child, "host": socket.gethostname(), "since": 0}))
    build(profile, log=QUIET)
    assert not lock.exists()


def test_refuses_to_write_into_a_foreign_folder(tiny_data: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "documents"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    profile = write_profile(tmp_path / "p.yaml", tiny_profile(tiny_data, foreign))
    with pytest.raises(ProfileError, match="not an edgetl run directory"):
        build(profile, log=QUIET)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_val_class_unknown_to_train_is_refused(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", train=3, val=2)
    shutil.copytree(data / "val" / "reds", data / "val" / "greens")
    profile = write_profile(tmp_path / "p.yaml", tiny_profile(data, tmp_path / "run"))
    with pytest.raises(DataError, match="val class folder\\(s\\) greens have no train folder"):
        build(profile, log=QUIET)
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_without_val_folder_val_is_split_off_train(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", train=10, val=1)
    shutil.rmtree(data / "val")
    profile = tiny_profile(data, tmp_path / "run", data={"val_fraction": 0.3})
    profile["optimize"] = {"int8": {"enabled": False}}
    profile["benchmark"].update(artifacts=["torch_fp32", "onnx_fp32"], memory=False, compute_peak=False)
    outcome = build(write_profile(tmp_path / "p.yaml", profile), log=QUIET)
    split = json.loads((tmp_path / "run/data/split.json").read_text())
    assert split["val_source"].startswith("split (30%")
    assert len(split["val"]) == 6
    assert outcome.report["deployed_artifact"] == "onnx_fp32"
    assert not (tmp_path / "run/models/model_int8.onnx").exists()


def test_fixed_batch_export_flows_through_quantization_and_benchmark(built_run, tmp_path: Path) -> None:
    import onnx

    profile = clone(built_run, tmp_path, export={"batch_size": 2}, benchmark={"memory": False, "compute_peak": False})
    outcome = build(profile, log=QUIET)
    ran = sorted(n for n, r in outcome.results.items() if not r.skipped)
    assert ran == ["benchmark", "export", "optimize", "package"]
    for name in ("model_fp32.onnx", "model_int8.onnx"):
        model = onnx.load(str(tmp_path / "run/models" / name))
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2, name
    report = outcome.report
    assert report["artifacts"]["onnx_int8"]["total"] == 10  # 10 val images through a batch-2 model
    assert report["artifacts"]["onnx_fp32"]["agreement"] == 1.0
    assert report["artifacts"]["onnx_int8"]["throughput"] is None, "batch-4 throughput is impossible at batch 2"
    assert report["artifacts"]["torch_fp32"]["throughput"]["batch"] == 4
    pixels = outcome.results["package"].summary.pixels_model
    assert not pixels["made"] and "fixed batch of 2" in pixels["reason"], "any_size takes one image at a time"


def test_fixed_batch_crop_size_pixels_model_keeps_the_batch(built_run, tmp_path: Path) -> None:
    import onnx

    profile = clone(
        built_run,
        tmp_path,
        export={"batch_size": 2},
        package={"pixels_model": "crop_size"},
        benchmark={"memory": False, "compute_peak": False},
    )
    outcome = build(profile, log=QUIET)
    pixels = outcome.results["package"].summary.pixels_model
    assert pixels["made"] and pixels["measured"]["agreement"] == pixels["measured"]["images"] == 10
    model = onnx.load(str(tmp_path / "run/bundle/model_pixels.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_a_published_file_edited_in_place_is_detected_and_rebuilt(built_run, tmp_path: Path) -> None:
    """Published files are hard links into the stage cache: an in-place edit reaches the cache too."""
    from edgetl.errors import ModelFileError
    from edgetl.runtime import load

    profile = clone(built_run, tmp_path)
    build(profile, log=QUIET)  # publishes hard links to the cache, as a normal build does
    labels = tmp_path / "run/labels.txt"
    original = labels.read_bytes()
    with labels.open("r+b") as handle:  # in place: same inode as the cached copy
        handle.write(b"X")
    assert sha256_file(labels) != sha256_file(built_run.run_dir / "labels.txt")
    with pytest.raises(ModelFileError, match="labels.txt: does not match manifest.json"):
        load(tmp_path / "run")

    outcome = build(profile, log=QUIET)

    assert not outcome.results["data"].skipped, "a damaged cache entry must not be reused"
    assert all(r.skipped for name, r in outcome.results.items() if name != "data"), "same outputs, same downstream"
    assert labels.read_bytes() == original
    load(tmp_path / "run").close()
