"""`edgetl train`, interrupt + `--resume` through the real CLI, and 2-process DDP on CPU."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgetl.errors import ModelFileError
from edgetl.runtime import load
from tests.helpers import deep_merge, published_hashes, tiny_profile, write_profile

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "EDGETL_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _interrupt_at_epoch(profile: Path, epoch: int) -> str:
    """Start `edgetl train`, send SIGINT once `epoch` is logged; return the rest of stderr (exit 130 checked)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "edgetl", "train", str(profile)],
        stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO,
        # A test run started in the background (`cmd &`) ignores SIGINT, and children inherit that;
        # give the build Python's normal Ctrl-C handling, as in a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.time() + 120
    assert process.stderr is not None
    for line in process.stderr:
        if f"epoch {epoch:>2}/" in line or time.time() > deadline:
            process.send_signal(signal.SIGINT)
            break
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130, rest
    return rest


def test_train_command_publishes_a_partial_run(built_run, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(built_run.run_dir, run)
    profile = yaml.safe_load((built_run.run_dir / "profile.yaml").read_text())
    path = write_profile(tmp_path / "p.yaml", deep_merge(profile, {"output_dir": str(run)}))
    result = subprocess.run(
        [sys.executable, "-m", "edgetl", "train", str(path)], capture_output=True, text=True, env=_env(), cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert "best epoch" in result.stdout and "up to date: data, finetune" in result.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["stages_run"] == ["data", "finetune"]
    assert (run / "training/curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "models/model.pt").is_file()
    assert not (run / "models/model_int8.onnx").exists(), "a stale model of the earlier full build was kept"
    assert not (run / "report.json").exists()
    with pytest.raises(ModelFileError, match="partial build"):
        load(run)


def test_interrupted_build_resumes_to_the_same_model(tiny_data: Path, tmp_path: Path) -> None:
    overrides = {
        # Enough epochs left after the interrupt that training cannot finish before SIGINT lands.
        "finetune": {"epochs": 12, "early_stopping": {"patience": None}},
        "benchmark": {"artifacts": ["torch_fp32"]},
    }
    overrides["optimize"] = {"int8": {"enabled": False}}
    overrides["budgets"] = {"artifact": "torch_fp32"}
    reference = write_profile(tmp_path / "a.yaml", tiny_profile(tiny_data, tmp_path / "a", **overrides))
    interrupted = write_profile(tmp_path / "b.yaml", tiny_profile(tiny_data, tmp_path / "b", **overrides))
    subprocess.run([sys.executable, "-m", "edgetl", "train", str(reference), "-q"], check=True, env=_env(), cwd=REPO)

    rest = _interrupt_at_epoch(interrupted, 3)
    assert "--resume" in rest
    assert list((tmp_path / "b/.edgetl/work/finetune").glob("*/last.pt")), "no checkpoint left to resume from"
    assert not (tmp_path / "b/models/model.pt").exists(), "an interrupted stage must not publish"

    resumed = subprocess.run(
        [sys.executable, "-m", "edgetl", "train", str(interrupted), "--resume"],
        capture_output=True, text=True, env=_env(), cwd=REPO,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stderr
    history = json.loads((tmp_path / "b/training/history.json").read_text())
    expected = json.loads((tmp_path / "a/training/history.json").read_text())
    assert history["resumed_from_epoch"] >= 3
    assert [r["train_loss"] for r in history["history"]] == pytest.approx(
        [r["train_loss"] for r in expected["history"]]
    )
    assert (tmp_path / "b/models/model.pt").read_bytes() == (tmp_path / "a/models/model.pt").read_bytes()

    # Ctrl-C during a retraining over that good run: nothing published before is touched.
    published = published_hashes(tmp_path / "b")
    changed = tiny_profile(tiny_data, tmp_path / "b", **deep_merge(overrides, {"finetune": {"lr": 0.02}}))
    _interrupt_at_epoch(write_profile(tmp_path / "b.yaml", changed), 2)
    assert published_hashes(tmp_path / "b") == published, "an interrupted rebuild changed the earlier result"


def test_two_process_ddp_on_cpu_matches_single_process(built_run, tiny_data: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    profile = yaml.safe_load((built_run.run_dir / "profile.yaml").read_text())
    profile = deep_merge(profile, {"output_dir": str(tmp_path / "ddp"), "finetune": {"threads": 1}})
    path = write_profile(tmp_path / "ddp.yaml", profile)
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "edgetl", "build", str(path), "-q"],
        capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "ddp/report.json").read_text())
    single = built_run.report
    assert report["training"]["epochs_run"] >= 1
    manifest = json.loads((tmp_path / "ddp/manifest.json").read_text())
    assert manifest["stages"]["finetune"]["summary"]["world_size"] == 2
    for name in ("torch_fp32", "onnx_int8"):
        assert abs(report["artifacts"][name]["correct"] - single["artifacts"][name]["correct"]) <= 1, name
    # Same global batches, augmentations and dropout masks: the same optimization, up to float order.
    ddp_history = json.loads((tmp_path / "ddp/training/history.json").read_text())["history"]
    single_history = json.loads((built_run.run_dir / "training/history.json").read_text())["history"]
    assert [r["train_loss"] for r in ddp_history] == pytest.approx([r["train_loss"] for r in single_history], rel=1e-3)
    assert result.stdout.count("edgetl tiny") == 1, "only rank 0 prints the report"


def test_auto_strategy_explains_its_choice(built_run, tmp_path: Path) -> None:
    from edgetl.console import Log
    from edgetl.pipeline import build

    run = tmp_path / "run"
    shutil.copytree(built_run.run_dir, run)
    profile = yaml.safe_load((built_run.run_dir / "profile.yaml").read_text())
    path = write_profile(
        # lr 0.001: at the tiny profile's 0.01, 3 epochs of full fine-tuning on 12 flat-colour images per class
        # move the backbone far enough that its int8 model can miss the gates; this test is about the choice.
        tmp_path / "p.yaml",
        deep_merge(profile, {"output_dir": str(run), "finetune": {"strategy": "auto", "lr": 0.001}}),
    )
    outcome = build(path, log=Log(quiet=True))
    summary = outcome.results["finetune"].summary
    auto = summary.auto
    # Both candidates were measured on the holdout, and the choice follows the measurement.
    assert auto["holdout_images"] > 0 and auto["probe_l2"] in (1e-4, 1e-3, 1e-2, 1e-1)
    # Both candidates were measured on the same holdout images; the kept one follows the rule.
    split = auto["holdout_disagreements"]
    assert split["probe_only"] + split["finetune_only"] <= auto["holdout_images"] and "holdout images" in auto["reason"]
    assert auto["strategy"] == ("feature_extract" if auto["evidence_p"] <= 0.05 else "full"), auto
    assert summary.strategy == auto["strategy"]
    for name in ("probe", "finetune"):  # both ends are kept beside the mix, loadable as checkpoints
        assert (run / "training/candidates" / f"{name}.pt").is_file()
    assert auto["train_resolution"] == summary.train_resolution == 128 and auto["epochs"] == 3
    # Progressive resizing: the first epoch on smaller crops, the rest at the deployed size, as recorded.
    history = json.loads((run / "training/history.json").read_text())["history"]
    assert [record["train_resolution"] for record in history] == [96, 128, 128]
    assert summary.train_resolutions == "96 px (1 epoch), 128 px (2)"
    assert summary.head_init["mode"] == "linear_probe"
    assert "strategy chosen by `auto`" in (run / "report.md").read_text()
