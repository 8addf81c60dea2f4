"""The command line: exit codes, one-line errors, no tracebacks unless --debug."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgetl.cli import main
from tests.helpers import deep_merge, run_cli, write_profile

REPO = Path(__file__).resolve().parents[1]


def test_version_backbones_and_targets(capsys) -> None:
    code, out, _ = run_cli(["version"], capsys)
    assert code == 0 and out.startswith("edgetl 0.")
    code, out, _ = run_cli(["backbones"], capsys)
    assert code == 0 and "efficientnet_lite0" in out and "resize 256" in out
    code, out, _ = run_cli(["targets"], capsys)
    assert code == 0 and "x86-cpu" in out
    # Each target says how far it was checked: run here, on emulated arm64 (tests/backends/test_arm64.py), or not.
    levels = {line.split()[0]: line.rsplit("[", 1)[1].rstrip("]") for line in out.splitlines()}
    assert levels["x86-cpu"] == "run and measured here" and levels["raspberry-pi-5"] == "arm64, emulated"
    assert levels["android-arm64"] == "arm64, emulated" and levels["jetson-orin-nano"] == "not run"
    code, out, _ = run_cli(["targets", "raspberry-pi-5"], capsys)
    assert "verified: its bundles run on arm64 in CI under emulation" in out and "no latency measured" in out


def test_validate_ok_and_bad(capsys, tmp_path: Path) -> None:
    code, out, _ = run_cli(["validate", str(REPO / "profiles/quickstart.yaml")], capsys)
    assert code == 0 and "ok" in out and "onnx_int8" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\ndata:\n  root: .\nfinetune:\n  epcohs: 3\n")
    code, _, err = run_cli(["validate", str(bad)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"edgetl: error: {bad}:6: finetune.epcohs: unknown key; did you mean 'epochs'? allowed keys: "
    )
    assert "batch_size, " in lines[0] and "weight_decay" in lines[0]
    assert "Traceback" not in err


def test_missing_profile_is_exit_2_without_traceback(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(["build", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and err.strip() == f"edgetl: error: {tmp_path / 'nope.yaml'}: profile not found"


def test_missing_data_folder_is_exit_2(capsys, tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(f"version: 1\nname: x\noutput_dir: {tmp_path / 'run'}\ndata:\n  root: {tmp_path / 'nothing'}\n")
    code, _, err = run_cli(["build", str(profile)], capsys)
    assert code == 2 and "data.root: folder not found" in err and len(err.strip().splitlines()) == 1


def test_usage_errors_are_exit_2_in_one_line(capsys) -> None:
    code, _, err = run_cli(["build"], capsys)
    assert code == 2 and err == (
        "edgetl: error: missing a profile: edgetl build PROFILE, or edgetl build --data DIR (no profile file)\n"
    )
    code, _, err = run_cli(["frobnicate"], capsys)
    assert code == 2 and err.count("\n") == 1 and "No such command 'frobnicate'" in err
    code, _, err = run_cli(["predict", "run", "a.jpg", "--top-k", "0"], capsys)
    assert code == 2 and err.count("\n") == 1 and "'--top-k'" in err and "greater than or equal to 1" in err
    code, out, _ = run_cli(["data"], capsys)  # a command group alone shows its help
    assert code == 2 and "check" in out


def test_internal_errors_are_one_line_unless_debug(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgetl.profile

    def boom(path):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(edgetl.profile, "load_profile", boom)
    code, _, err = run_cli(["validate", "x.yaml"], capsys)
    assert (
        code == 1
        and err.strip() == "edgetl: internal error: RuntimeError: kaboom (rerun with --debug for the traceback)"
    )
    with pytest.raises(RuntimeError, match="kaboom"):
        main(["validate", "x.yaml", "--debug"])


def test_predict_prints_labels_and_scores(built_run, capsys) -> None:
    split = json.loads((built_run.run_dir / "data/split.json").read_text())
    image = Path(split["root"]) / split["val"][0][0]
    code, out, _ = run_cli(["predict", str(built_run.run_dir), str(image), "--top-k", "2"], capsys)
    assert code == 0
    path, labels = out.strip().split("\t")
    assert path == str(image) and len(labels.split(", ")) == 2


def test_budget_violation_prints_table_then_exits_3(built_run, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(built_run.run_dir, run)
    profile = yaml.safe_load((built_run.run_dir / "profile.yaml").read_text())
    profile = deep_merge(profile, {"output_dir": str(run), "budgets": {"min_accuracy": 100.0, "max_size_mb": 0.5}})
    path = write_profile(tmp_path / "p.yaml", profile)
    code, out, err = run_cli(["build", str(path), "--quiet"], capsys)
    assert code == 3
    assert "onnx_int8 (deployed)" in out and "FAIL max_size_mb" in out
    assert "edgetl: error: budget violated: " in err and "max_size_mb: onnx_int8 file size" in err
    assert json.loads((run / "report.json").read_text())["passed"] is False


def test_console_script_is_installed() -> None:
    executable = shutil.which("edgetl")
    if executable is None:
        pytest.skip("edgetl console script not on PATH (package not installed)")
    result = subprocess.run([executable, "version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "edgetl" in result.stdout


def test_python_dash_m_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgetl", "version"], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert result.returncode == 0 and result.stdout.startswith("edgetl")


def test_predict_reads_folders_and_globs_and_writes_escaped_tsv_csv_and_jsonl(
    built_run, tmp_path: Path, capsys
) -> None:
    import csv
    import io

    split = json.loads((built_run.run_dir / "data/split.json").read_text())
    source = Path(split["root"]) / split["val"][0][0]
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    odd = ["plain.jpg", "tab\there.jpg", "new\nline.jpg", "back\\slash.jpg", "sub/deep.jpg"]
    for name in odd:
        shutil.copy(source, folder / name)
    (folder / "notes.txt").write_text("not an image: passed over in a folder")
    run = str(built_run.run_dir)

    code, out, err = run_cli(["predict", run, str(folder), "--batch-size", "2"], capsys)
    assert code == 0, err
    rows = out.splitlines()
    assert len(rows) == len(odd), "one row per image, whatever its name"
    assert all(row.count("\t") == 1 for row in rows)
    assert any(row.startswith(str(folder / "tab\\there.jpg")) for row in rows)
    assert any(row.startswith(str(folder / "new\\nline.jpg")) for row in rows)

    code, out, _ = run_cli(["predict", run, str(folder / "*.jpg"), "--format", "csv", "--top-k", "2"], capsys)
    assert code == 0
    table = list(csv.reader(io.StringIO(out)))
    assert table[0] == ["image", "label_1", "score_1", "label_2", "score_2"]
    assert sorted(r[0] for r in table[1:]) == sorted(str(folder / n) for n in odd if "/" not in n)

    code, out, _ = run_cli(["predict", run, str(folder / "**" / "*.jpg"), "--format", "jsonl"], capsys)
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert {r["image"] for r in records} == {str(folder / n) for n in odd}
    assert all(len(r["predictions"]) == 1 and 0 <= r["predictions"][0]["score"] <= 1 for r in records)


def test_predict_refuses_a_pattern_that_matches_nothing_and_a_huge_image(built_run, tmp_path: Path, capsys) -> None:
    from PIL import Image

    code, _, err = run_cli(["predict", str(built_run.run_dir), str(tmp_path / "*.jpg")], capsys)
    assert code == 2 and "no file matches this pattern" in err
    huge = tmp_path / "huge.png"
    Image.new("L", (10_000, 9_500)).save(huge)  # 95 megapixels, a 100 KB file
    code, _, err = run_cli(["predict", str(built_run.run_dir), str(huge)], capsys)
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert str(huge) in line and "95 megapixels, over the limit of 89" in line


def test_predict_memory_stays_bounded_however_many_images(built_run, tmp_path: Path) -> None:
    """300 images through `edgetl predict` in a fresh process: peak RSS well under one batch of 300 would need."""
    import subprocess
    import sys

    split = json.loads((built_run.run_dir / "data/split.json").read_text())
    source = Path(split["root"]) / split["val"][0][0]
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(300):
        (folder / f"{i:04d}.jpg").write_bytes(source.read_bytes())
    from benchmarks.predict_memory import PEAK_RSS  # the child reports its own VmHWM (see there)

    command = ["predict", str(built_run.run_dir), str(folder), "--format", "jsonl"]
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command],
        capture_output=True, text=True, timeout=300, env={**os.environ, "EDGETL_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 300
    peak_mb = float(done.stderr.strip().splitlines()[-1].removeprefix("peak_rss_kib ")) / 1024
    # Measured: 1.46 GB with all 300 as one batch (what predict did), 0.35 GB in batches of 32.
    assert peak_mb < 700, f"peak RSS {peak_mb:.0f} MB"
