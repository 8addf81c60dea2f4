"""The web target's pieces that need no browser: the bundle server, where onnxruntime-web comes from, the profile.

The page itself runs in Chromium in tests/backends/test_web_target.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edgetl import layout
from edgetl.errors import DownloadError, UserInputError
from edgetl.measure.browser import BundleServer
from edgetl.web import ORT_WEB_CDN, ORT_WEB_FILES, fetch_web_runtime, find_web_runtime, write_web_app
from tests.helpers import make_dataset, run_cli, tiny_profile, write_profile


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), b""


def test_the_server_sends_isolation_headers_and_nothing_outside_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "web").mkdir(parents=True)
    (bundle / "web" / "index.html").write_text("<!doctype html>")
    (bundle / "web" / "app.mjs").write_text("export {}")
    (tmp_path / "secret.txt").write_text("not for the browser")
    (bundle / "web" / "link.txt").symlink_to(tmp_path / "secret.txt")
    image = tmp_path / "cat.jpg"
    image.write_bytes(b"\xff\xd8 jpeg")
    model = tmp_path / "other.onnx"
    model.write_bytes(b"onnx")
    with BundleServer(bundle, [image], {"onnx_fp32": model}) as server:
        status, headers, body = _get(f"{server.url}/web/index.html")
        assert status == 200 and body == b"<!doctype html>"
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert _get(f"{server.url}/")[2] == b"<!doctype html>"  # the root is the page
        assert _get(f"{server.url}/web/app.mjs")[1]["Content-Type"] == "text/javascript"
        assert _get(server.image_url(0))[2] == image.read_bytes()
        assert _get(f"{server.url}{server.model_url('onnx_fp32')}")[2] == b"onnx"
        for outside in ("/../secret.txt", "/web/../../secret.txt", "/%2e%2e/secret.txt", "/web/link.txt"):
            assert _get(f"{server.url}{outside}")[0] == 404, outside
        for missing in ("/__images/1", "/__images/x", "/__models/onnx_int8.onnx", "/web/none.js"):
            assert _get(f"{server.url}{missing}")[0] == 404, missing


def _fake_ort_package(root: Path) -> Path:
    dist = root / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    for name in ORT_WEB_FILES:
        (dist / name).write_text(f"// {name}")
    (root / "onnxruntime-web" / "package.json").write_text(json.dumps({"version": "1.31.1"}))
    return root / "onnxruntime-web"


def test_a_local_onnxruntime_web_is_found_with_its_version_or_refused_in_one_line(tmp_path: Path) -> None:
    package = _fake_ort_package(tmp_path)
    for given in (package, package / "dist"):
        runtime = find_web_runtime(given)
        assert runtime is not None and runtime.folder == package / "dist" and runtime.version == "1.31.1"
    with pytest.raises(UserInputError, match=r"web.onnxruntime_web: .*\(missing ort-wasm-simd-threaded.wasm\)"):
        (package / "dist" / "ort-wasm-simd-threaded.wasm").unlink()
        find_web_runtime(package)


def test_offline_without_a_copy_the_page_loads_the_pinned_release_from_a_cdn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETL_OFFLINE", "1")
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGETL_ONNXRUNTIME_WEB", raising=False)
    assert find_web_runtime(None) is None
    written = write_web_app(tmp_path / "bundle", None)
    runtime = json.loads((tmp_path / "bundle" / "web" / layout.BUNDLE_WEB_RUNTIME).read_text())
    assert runtime["module"].startswith(ORT_WEB_CDN) and runtime["wasm_paths"] == ORT_WEB_CDN
    assert not any("/ort/" in name for name in written)

    local = find_web_runtime(_fake_ort_package(tmp_path / "npm"))
    written = write_web_app(tmp_path / "bundle2", local)
    runtime = json.loads((tmp_path / "bundle2" / "web" / layout.BUNDLE_WEB_RUNTIME).read_text())
    assert runtime["module"] == "ort/ort.wasm.min.mjs" and runtime["version"] == "1.31.1"
    assert {f"web/ort/{name}" for name in ORT_WEB_FILES} <= set(written)


def test_the_download_is_checked_against_the_pinned_integrity(tmp_path: Path) -> None:
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as archive:
        for name in ORT_WEB_FILES:
            data = f"// {name}".encode()
            info = tarfile.TarInfo(f"package/dist/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    tarball = tmp_path / "onnxruntime-web.tgz"
    tarball.write_bytes(payload.getvalue())
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()

    target = tmp_path / "cache" / "1.31.1"
    fetch_web_runtime(target, tarball.as_uri(), integrity)
    assert sorted(p.name for p in target.iterdir()) == sorted(ORT_WEB_FILES)

    wrong = tmp_path / "cache" / "wrong"
    with pytest.raises(DownloadError, match="does not match the pinned integrity"):
        fetch_web_runtime(wrong, tarball.as_uri(), "sha512-" + base64.b64encode(b"x" * 64).decode())
    assert not wrong.exists()
    with pytest.raises(DownloadError, match="could not download onnxruntime-web"):
        fetch_web_runtime(wrong, (tmp_path / "absent.tgz").as_uri(), integrity)


def test_web_settings_belong_to_the_web_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data", train=2, val=1)
    cases = {
        "x86.yaml": (tiny_profile(data, tmp_path / "run", web={"chromium": "off"}), "the web section applies"),
        "crop.yaml": (
            tiny_profile(data, tmp_path / "run", target="web", package={"pixels_model": "crop_size"}),
            "set package.pixels_model: any_size",
        ),
    }
    for name, (profile, message) in cases.items():
        code, _, err = run_cli(["validate", str(write_profile(tmp_path / name, profile))], capsys)
        assert code == 2 and message in err, err
        assert "Traceback" not in err


def test_serve_refuses_a_bundle_without_a_page(built_run, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["serve", str(built_run.run_dir / layout.BUNDLE_DIR)], capsys)
    assert code == 2 and "has no web page (target x86-cpu)" in err, err
    assert len(err.strip().splitlines()) == 1


def test_the_page_must_agree_with_predict_as_often_as_any_runtime() -> None:
    from edgetl.measure.browser import BrowserError, require_agreement

    def results(agree: int, images: int = 100) -> dict:
        flips = [{"image": f"/v/{i}.jpg", "page": 1, "predict": 0} for i in range(images - agree)]
        return {
            "images": images,
            "agreement": agree,
            "agreement_percent": 100.0 * agree / images if images else 0.0,
            "disagreements": flips,
        }

    require_agreement(results(99), 99.0, ["ants", "bees"])  # at the floor: passes
    with pytest.raises(
        BrowserError,
        match=r"agree with edgetl predict on 98 of 100 val images \(98.0 % < "
        r"benchmark.min_runtime_agreement 99 %\): 0.jpg: page bees, predict ants; 1.jpg",
    ) as raised:
        require_agreement(results(98), 99.0, ["ants", "bees"])
    assert raised.value.exit_code == 4
    with pytest.raises(BrowserError, match="checked on no images: nothing was compared"):
        require_agreement(results(0, images=0), 99.0, ["ants", "bees"])
