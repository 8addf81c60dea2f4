"""Bundles built here, run on arm64: Debian 12's arm64 Python under qemu-user, with the aarch64 wheels a
Raspberry Pi or an arm64 Linux board installs (core edgetl: numpy, pillow, ONNX Runtime; LiteRT).

For each bundle, on arm64: `edgetl bundle verify` (its preprocessing and its runtime against the
bundle's references, held to the tolerances the bundle states) and `edgetl predict` on every val image,
whose labels and scores are compared with the same bundle run here (x86). Emulation checks correctness
only: no timing from it is reported. The root comes from `tests/arm64/make_root.sh` (`.ci/run` makes it
and sets EDGETL_ARM64_ROOT and EDGETL_REQUIRE_ARM64=1); without it these tests skip with one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgetl.runtime import load
from tests.arm64.emulation import Arm64, arm64_python
from tests.backends.conftest import data_root
from tests.helpers import tiny_profile, write_profile

# Largest difference in a class probability allowed between arm64 and x86 for the same bundle and image:
# both decode and resize bit for bit alike (the preprocessing contract), so what differs is the runtime's
# kernels (ONNX Runtime's and XNNPACK's arm64 paths), well inside this bound on the tiny model; the
# measured figures are in the assertion messages and in the test's log.
SCORE_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def arm64(tmp_path_factory: pytest.TempPathFactory) -> Arm64:
    python = arm64_python(tmp_path_factory.mktemp("arm64"))
    done = python.run(
        ["-c", "import importlib.util, platform; print(platform.machine(), importlib.util.find_spec('torch'))"]
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["aarch64", "None"], done.stdout  # arm64, and no torch: what a device has
    return python


@pytest.fixture(scope="module")
def raspberry_pi_run(built_run, tmp_path_factory: pytest.TempPathFactory):
    """The tiny build re-targeted at raspberry-pi-5 (ONNX Runtime int8): everything but packaging is cached."""
    from edgetl.console import Log
    from edgetl.pipeline import build

    base = tmp_path_factory.mktemp("raspberry-pi-5")
    shutil.copytree(built_run.run_dir, base / "run")
    profile = tiny_profile(data_root(built_run.run_dir), base / "run", target="raspberry-pi-5")
    return build(write_profile(base / "pi.yaml", profile), log=Log(quiet=True))


def _val_images(run_dir: Path) -> list[Path]:
    return sorted(p for p in (data_root(run_dir) / "val").rglob("*") if p.is_file())


def _check_on_arm64(arm64: Arm64, bundle: Path, images: list[Path], tmp_path: Path) -> dict[str, float]:
    verified = arm64.edgetl(["bundle", "verify", str(bundle), "--json", str(tmp_path / "verify.json")])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads((tmp_path / "verify.json").read_text())
    assert report["port"]["machine"] == "aarch64" and report["passed"], report
    assert report["inputs"]["values_differing"] == 0, "decoding and resizing are bit-exact on arm64"

    predicted = arm64.edgetl(["predict", str(bundle), *map(str, images), "--format", "jsonl", "--top-k", "2"])
    assert predicted.returncode == 0, predicted.stderr
    there = [json.loads(line) for line in predicted.stdout.splitlines()]
    predictor = load(bundle)
    try:
        here = predictor.predict(images, top_k=2)
    finally:
        predictor.close()
    assert len(there) == len(here) == len(images)
    worst = 0.0
    for row, local, image in zip(there, here, images, strict=True):
        labels = [item["label"] for item in row["predictions"]]
        assert labels[0] == local[0].label, (image.name, row, local)  # every image: the same top-1 label
        scores_there = {item["label"]: item["score"] for item in row["predictions"]}
        for prediction in local:
            worst = max(worst, abs(scores_there[prediction.label] - prediction.score))
    assert worst <= SCORE_TOLERANCE, f"largest score difference arm64 vs x86: {worst:.4g}"
    return {"logits_max_abs": report["logits"]["max_abs"], "score_max_abs": worst}


def test_raspberry_pi_bundle_verifies_and_predicts_like_x86_on_arm64(arm64, raspberry_pi_run, tmp_path: Path) -> None:
    bundle = raspberry_pi_run.run_dir / "bundle"
    assert json.loads((bundle / "bundle.json").read_text())["target"]["name"] == "raspberry-pi-5"
    figures = _check_on_arm64(arm64, bundle, _val_images(raspberry_pi_run.run_dir), tmp_path)
    print("raspberry-pi-5 (ONNX Runtime int8) on arm64 vs x86:", figures)


def test_android_litert_bundle_verifies_and_predicts_like_x86_on_arm64(arm64, litert_run, tmp_path: Path) -> None:
    bundle = litert_run.run_dir / "bundle"
    assert json.loads((bundle / "bundle.json").read_text())["model"]["artifact"] == "litert_int8"
    figures = _check_on_arm64(arm64, bundle, _val_images(litert_run.run_dir), tmp_path)
    print("android-arm64 (LiteRT int8) on arm64 vs x86:", figures)


def test_the_device_chooses_between_the_bundles_candidates_and_predict_follows(
    raspberry_pi_run, tmp_path: Path, capsys
) -> None:
    """A Pi is not the build machine: the bundle carries every model that passed, ranked here as a guess."""
    from tests.helpers import run_cli

    info = json.loads((raspberry_pi_run.run_dir / "bundle/bundle.json").read_text())
    assert info["model"]["artifact"] == "onnx_int8" and info["model"]["build_machine"]["rank"] >= 1
    (candidate,) = info["candidates"]
    assert candidate["artifact"] == "onnx_fp32" and candidate["file"] == "candidates/onnx_fp32/model.onnx"
    assert candidate["sha256"] == info["files"][candidate["file"]] and "guess" in info["candidates_note"]
    assert "ranked by **this build machine**" in (raspberry_pi_run.run_dir / "report.md").read_text()

    bundle = tmp_path / "bundle"
    shutil.copytree(raspberry_pi_run.run_dir / "bundle", bundle)
    code, out, err = run_cli(["bench", str(bundle), "--select", "--quiet"], capsys)
    assert code == 0, err
    choice = json.loads((bundle / "device.json").read_text())
    measured = {entry["artifact"]: entry for entry in choice["ranking_here"]}
    assert set(measured) == {"onnx_int8", "onnx_fp32"} and choice["chosen"] in measured
    assert choice["chosen"] == min(measured, key=lambda name: measured[name]["p50_ms"])  # the fastest that agrees
    assert measured["onnx_fp32"]["build_machine"]["rank"] == candidate["build_machine"]["rank"]
    assert f"Chosen on this device: {choice['chosen']}" in out

    # predict and edgetl.runtime follow device.json, whichever model it names.
    choice["chosen"] = "onnx_fp32"
    (bundle / "device.json").write_text(json.dumps(choice))
    predictor = load(bundle)
    try:
        assert predictor.runner.name == "onnx_fp32"
    finally:
        predictor.close()
    image = _val_images(raspberry_pi_run.run_dir)[0]
    code, out, err = run_cli(["predict", str(bundle), str(image)], capsys)
    assert code == 0 and out.startswith(str(image)), err

    # A device.json naming no model of this bundle, or measured for another bundle.json: one line, exit 2.
    for broken, message in (
        ({"chosen": "onnx_fp16"}, "chosen must be one of"),
        ({"bundle_sha256": "0" * 64}, "another"),
    ):
        (bundle / "device.json").write_text(json.dumps({**choice, **broken}))
        code, _, err = run_cli(["predict", str(bundle), str(image)], capsys)
        assert code == 2 and "device.json" in err and message in err and len(err.strip().splitlines()) == 1, err
    (bundle / "device.json").unlink()
    (bundle / candidate["file"]).write_bytes(b"not the model")  # a candidate is checked like the model
    code, _, err = run_cli(["predict", str(bundle), str(image)], capsys)
    assert code == 2 and "candidates/onnx_fp32/model.onnx" in err and "SHA-256" in err
