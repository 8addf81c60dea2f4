"""The web target's part of a bundle: a page and a JavaScript module that run model_pixels.onnx in onnxruntime-web.

`web/` in the bundle holds `index.html` + `app.mjs` (a demo page: files or camera -> labels),
`edgetl-web.mjs` (the module an app imports: decode -> pixels model -> labels), `runtime.json` (where
onnxruntime-web is loaded from) and, when the build had one, `ort/`: onnxruntime-web's WebAssembly build
(three files, ~15 MB), so the bundle runs offline and the version measured is the version shipped.

Where that copy comes from, first match wins: the profile's `web.onnxruntime_web` (an npm package
folder or its `dist/`), `$EDGETL_ONNXRUNTIME_WEB`, edgetl's cache, or a download of the pinned npm
tarball (checked against its published SHA-512) into the cache unless `EDGETL_OFFLINE` is set. With none,
the page loads the same pinned version from a CDN and the build cannot check the page in a browser.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgetl import layout
from edgetl.errors import DownloadError, UserInputError
from edgetl.files import write_json_atomic
from edgetl.paths import cache_dir, offline

ORT_WEB_VERSION = "1.31.1"
ORT_WEB_TARBALL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{ORT_WEB_VERSION}.tgz"
ORT_WEB_INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
ORT_WEB_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/"
# The WebAssembly-only build: the ES module, its Emscripten loader, and the SIMD + threads binary.
ORT_WEB_MODULE = "ort.wasm.min.mjs"
ORT_WEB_FILES = (ORT_WEB_MODULE, "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
PAGE_ASSETS = (layout.BUNDLE_WEB_PAGE, "app.mjs", "edgetl-web.mjs")


@dataclass(frozen=True)
class WebRuntime:
    """A local copy of onnxruntime-web's WebAssembly build: the folder holding ORT_WEB_FILES, and its version."""

    folder: Path
    version: str
    source: str  # where it was found, for the log and the report

    def identity(self) -> dict[str, object]:
        """What a build's fingerprint records: the version and each file's size (hashing 15 MB per build is waste)."""
        return {"version": self.version, "files": {name: (self.folder / name).stat().st_size for name in ORT_WEB_FILES}}


def _as_runtime(path: Path, source: str) -> WebRuntime:
    """An npm package folder (with dist/) or a dist folder, checked to hold the WebAssembly build."""
    folder = path / "dist" if (path / "dist").is_dir() else path
    missing = [name for name in ORT_WEB_FILES if not (folder / name).is_file()]
    if missing:
        raise UserInputError(
            f"{source}: {folder} is not onnxruntime-web's dist folder (missing {', '.join(missing)})",
            hint=f"point it at node_modules/onnxruntime-web after `npm install onnxruntime-web@{ORT_WEB_VERSION}`",
        )
    version = "unknown"
    for manifest in (folder / "package.json", folder.parent / "package.json"):
        if manifest.is_file():
            try:
                version = str(json.loads(manifest.read_text()).get("version", "unknown"))
            except (OSError, ValueError):
                pass
            break
    return WebRuntime(folder=folder, version=version, source=source)


def find_web_runtime(explicit: Path | None, where: str = "web.onnxruntime_web") -> WebRuntime | None:
    """The onnxruntime-web copy a web bundle ships, fetched into the cache when allowed; None when there is none."""
    if explicit is not None:
        return _as_runtime(explicit.expanduser(), where)
    from_env = os.environ.get("EDGETL_ONNXRUNTIME_WEB")
    if from_env:
        return _as_runtime(Path(from_env).expanduser(), "EDGETL_ONNXRUNTIME_WEB")
    cached = cache_dir() / "onnxruntime-web" / ORT_WEB_VERSION
    if all((cached / name).is_file() for name in ORT_WEB_FILES):
        return WebRuntime(folder=cached, version=ORT_WEB_VERSION, source=f"cache ({cached})")
    if offline():
        return None
    fetch_web_runtime(cached)
    return WebRuntime(folder=cached, version=ORT_WEB_VERSION, source=f"downloaded from {ORT_WEB_TARBALL}")


def fetch_web_runtime(folder: Path, url: str = ORT_WEB_TARBALL, integrity: str = ORT_WEB_INTEGRITY) -> None:
    """Download the npm tarball, check its SHA-512 against the pinned integrity, keep the three files."""
    try:
        with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (a pinned https URL)
            data = response.read()
    except OSError as error:
        raise DownloadError(
            f"web target: could not download onnxruntime-web {ORT_WEB_VERSION} ({error})",
            hint="set web.onnxruntime_web to a local copy (npm install onnxruntime-web), or EDGETL_OFFLINE=1 to "
            "build a bundle that loads it from a CDN",
        ) from None
    algorithm, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if digest != expected:
        raise DownloadError(f"{url}: its {algorithm} does not match the pinned integrity; not using it")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for name in ORT_WEB_FILES:
            member = archive.extractfile(f"package/dist/{name}")
            if member is None:
                raise UserInputError(f"{url}: package/dist/{name} is missing from the tarball")
            (partial / name).write_bytes(member.read())
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def write_web_app(bundle: Path, runtime: WebRuntime | None) -> list[str]:
    """Write web/ into a bundle being made; returns the files written, relative to the bundle."""
    web = bundle / layout.BUNDLE_WEB_DIR
    web.mkdir(parents=True, exist_ok=True)
    written = []
    assets = resources.files("edgetl.web") / "assets"
    for name in PAGE_ASSETS:
        (web / name).write_bytes((assets / name).read_bytes())
        written.append(f"{layout.BUNDLE_WEB_DIR}/{name}")
    if runtime is not None:
        (web / layout.BUNDLE_WEB_ORT_DIR).mkdir(exist_ok=True)
        for name in ORT_WEB_FILES:
            shutil.copyfile(runtime.folder / name, web / layout.BUNDLE_WEB_ORT_DIR / name)
            written.append(f"{layout.BUNDLE_WEB_DIR}/{layout.BUNDLE_WEB_ORT_DIR}/{name}")
        record = {
            "module": f"{layout.BUNDLE_WEB_ORT_DIR}/{ORT_WEB_MODULE}",
            "wasm_paths": f"{layout.BUNDLE_WEB_ORT_DIR}/",
            "version": runtime.version,
            "source": "the bundle's own copy",
        }
    else:
        record = {
            "module": f"{ORT_WEB_CDN}{ORT_WEB_MODULE}",
            "wasm_paths": ORT_WEB_CDN,
            "version": ORT_WEB_VERSION,
            "source": "CDN (the build had no local copy of onnxruntime-web)",
        }
    write_json_atomic(web / layout.BUNDLE_WEB_RUNTIME, record)
    written.append(f"{layout.BUNDLE_WEB_DIR}/{layout.BUNDLE_WEB_RUNTIME}")
    return written
