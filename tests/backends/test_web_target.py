"""The web target end to end: the tiny build re-targeted at `web`, its own page run in headless Chromium.

Needs Chromium and a local onnxruntime-web (tests/web: `npm ci`, or $EDGETL_ONNXRUNTIME_WEB); `.ci/run`
installs both and sets EDGETL_REQUIRE_CHROMIUM=1, so there a missing browser fails instead of skipping.
Nothing is downloaded: the build is offline and ships the local copy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from edgetl import layout
from edgetl.bundle import read_bundle
from edgetl.files import sha256_file
from edgetl.measure.browser import BrowserError, check_web_bundle, find_chromium
from edgetl.runtime import load
from tests.backends.conftest import data_root
from tests.helpers import run_cli, tiny_profile, write_profile

LOCAL_ORT_WEB = Path(__file__).resolve().parents[1] / "web" / "node_modules" / "onnxruntime-web"


def _requirements() -> tuple[Path, Path]:
    chromium = find_chromium()
    ort_web = Path(os.environ.get("EDGETL_ONNXRUNTIME_WEB") or LOCAL_ORT_WEB)
    if chromium is not None and (ort_web / "dist").is_dir():
        return chromium, ort_web
    missing = "chromium" if chromium is None else f"onnxruntime-web ({ort_web}; cd tests/web && npm ci)"
    if os.environ.get("EDGETL_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"EDGETL_REQUIRE_CHROMIUM=1 but {missing} is missing")
    pytest.skip(f"{missing} is missing: the web page cannot run here")


@pytest.fixture(scope="module")
def web_run(built_run, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch):
    """The tiny build re-targeted at web: package and browser stages run, the rest is cached."""
    from edgetl.console import Log
    from edgetl.pipeline import build

    chromium, ort_web = _requirements()
    monkeypatch_module.setenv("EDGETL_OFFLINE", "1")
    base = tmp_path_factory.mktemp("web")
    shutil.copytree(built_run.run_dir, base / "run")
    profile = tiny_profile(
        data_root(built_run.run_dir),
        base / "run",
        target="web",
        web={"onnxruntime_web": str(ort_web), "chromium": str(chromium), "threads": [1, 2]},
    )
    return build(write_profile(base / "web.yaml", profile), log=Log(quiet=True))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _val_images(run_dir: Path) -> list[Path]:
    return sorted(p for p in (data_root(run_dir) / "val").rglob("*") if p.is_file())


def test_the_page_agrees_with_predict_on_every_val_image_and_is_timed(web_run) -> None:
    run = web_run.run_dir
    report = json.loads((run / layout.REPORT_JSON).read_text())
    browser = report["browser"]
    images = _val_images(run)
    assert browser["checked"] and browser["images"] == len(images) > 0
    assert browser["agreement"] == len(images), browser["disagreements"]
    assert browser["cross_origin_isolated"] is True
    timed = {(row["artifact"], row["threads"]) for row in browser["latency"]}
    # The shipped int8 model and the fp32 model that also passed, each with 1 and 2 WASM threads.
    assert timed == {("onnx_int8", 1), ("onnx_int8", 2), ("onnx_fp32", 1), ("onnx_fp32", 2)}
    assert all(row["p50_ms"] > 0 and row["runs"] == 4 for row in browser["latency"])  # benchmark.iterations
    assert "Chrome/" in browser["browser"] and browser["end_to_end"]["p50_ms"] > 0
    markdown = (run / layout.REPORT_MD).read_text()
    assert "## Measured in the browser" in markdown and "not the user's device" in markdown
    per_image = json.loads((run / layout.BROWSER_DIR / layout.BROWSER_RESULTS).read_text())["per_image"]
    assert len(per_image) == len(images)


def test_the_web_bundle_lists_its_page_and_runtime_and_still_verifies(web_run, capsys) -> None:
    bundle_dir = web_run.run_dir / layout.BUNDLE_DIR
    bundle = read_bundle(bundle_dir)  # checks every listed file's SHA-256
    files = bundle.info["files"]
    for name in ("web/index.html", "web/app.mjs", "web/edgetl-web.mjs", "web/runtime.json", "web/ort/ort.wasm.min.mjs"):
        assert name in files, name
    assert bundle.info["web"]["onnxruntime_web"] == "1.31.1"
    assert not bundle.info.get("candidates"), "a page cannot choose between models: no candidates/ in a web bundle"
    runtime = json.loads((bundle_dir / "web" / "runtime.json").read_text())
    assert runtime["module"] == "ort/ort.wasm.min.mjs"
    code, out, err = run_cli(["bundle", "verify", str(bundle_dir)], capsys)
    assert code == 0, out + err
    predictor = load(bundle_dir)  # the same bundle still runs in Python
    predictor.close()


def test_a_broken_page_fails_with_what_the_browser_said(web_run, tmp_path: Path) -> None:
    chromium, _ = _requirements()
    broken = tmp_path / "bundle"
    shutil.copytree(web_run.run_dir / layout.BUNDLE_DIR, broken)
    runtime = broken / "web" / "runtime.json"
    runtime.write_text(json.dumps({**json.loads(runtime.read_text()), "module": "ort/missing.mjs"}))
    info = json.loads((broken / layout.BUNDLE_INFO).read_text())  # a consistent bundle whose page cannot load
    info["files"]["web/runtime.json"] = sha256_file(runtime)
    (broken / layout.BUNDLE_INFO).write_text(json.dumps(info))
    images = _val_images(web_run.run_dir)[:1]
    with pytest.raises(BrowserError, match="missing.mjs|Failed to fetch|404"):
        check_web_bundle(broken, images, [0], chromium, timeout_s=60)
