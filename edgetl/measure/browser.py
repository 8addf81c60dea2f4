"""A web bundle run in headless Chromium: its own page classifies images, and the browser times the model.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages ending in
a NUL byte on file descriptors 3 and 4), so nothing beyond the standard library is needed on the Python
side. The bundle is served from 127.0.0.1 by a server that sends the cross-origin isolation headers
(COOP/COEP) that multithreaded WebAssembly needs, exactly as `edgetl serve` does for a user.

What is measured is the shipped page (`web/index.html` and its module) with the shipped model, in this
machine's Chromium: the latency is the build machine's browser, said so wherever it is reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mimetypes
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import numpy as np

from edgetl import layout
from edgetl.errors import UserInputError, VerificationError
from edgetl.machine import describe_machine

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_IMAGES_PREFIX = "/__images/"
_MODELS_PREFIX = "/__models/"
_ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_TYPES = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
}


class BrowserError(VerificationError):
    """Chromium or the page failed: the message says what the page or the browser reported (exit code 4)."""


def find_chromium(explicit: str | None = None) -> Path | None:
    """The Chromium to drive: `explicit` (a path or a command name), else `$EDGETL_CHROMIUM`, else the first on PATH."""
    for name in (explicit, os.environ.get("EDGETL_CHROMIUM"), *([] if explicit else CHROMIUM_NAMES)):
        if not name:
            continue
        found = shutil.which(name)
        if found:
            return Path(found)
        if explicit:
            raise UserInputError(f"Chromium {explicit!r} not found (a path to the browser or a command on PATH)")
    return None


def chromium_version(executable: Path) -> str:
    """`Chromium 150.0.7871.100 ...` as the browser prints it (the report and the stage's fingerprint say it)."""
    try:
        done = subprocess.run([str(executable), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BrowserError(f"{executable} --version: {error}") from None
    return done.stdout.strip() or done.stderr.strip() or "unknown"


class BundleServer:
    """Serves one bundle directory and a fixed list of image files on 127.0.0.1, with COOP/COEP headers.

    Only files inside the bundle (after resolving symlinks) and the listed images are served.
    """

    def __init__(
        self,
        bundle: Path,
        images: Sequence[Path] = (),
        models: dict[str, Path] | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.bundle = bundle.resolve()
        self.images = [Path(p) for p in images]
        self.models = dict(models or {})
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server._serve(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="edgetl-bundle-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def image_url(self, index: int) -> str:
        return f"{self.url}{_IMAGES_PREFIX}{index}"

    def model_url(self, name: str) -> str:
        return f"{_MODELS_PREFIX}{name}.onnx"

    def _file_for(self, path: str) -> Path | None:
        if path.startswith(_MODELS_PREFIX) and path.endswith(".onnx"):
            return self.models.get(path[len(_MODELS_PREFIX) : -len(".onnx")])
        if path.startswith(_IMAGES_PREFIX):
            index = path[len(_IMAGES_PREFIX) :]
            return self.images[int(index)] if index.isdigit() and int(index) < len(self.images) else None
        relative = unquote(path).lstrip("/") or f"{layout.BUNDLE_WEB_DIR}/{layout.BUNDLE_WEB_PAGE}"
        candidate = (self.bundle / relative).resolve()
        if candidate.is_dir():
            candidate = candidate / layout.BUNDLE_WEB_PAGE
        return candidate if candidate.is_relative_to(self.bundle) and candidate.is_file() else None

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        file = self._file_for(urlsplit(request.path).path)
        if file is None:
            request.send_error(HTTPStatus.NOT_FOUND)
            return
        body = file.read_bytes()
        kind = _TYPES.get(file.suffix.lower()) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        request.send_response(HTTPStatus.OK)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-cache")
        for name, value in _ISOLATION_HEADERS.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)

    def __enter__(self) -> BundleServer:
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


_PLACE_PIPES = (
    "import os, sys; read, write = int(sys.argv[1]), int(sys.argv[2]); os.dup2(read, 3); os.dup2(write, 4); "
    "os.close(read); os.close(write); os.execv(sys.argv[3], sys.argv[3:])"
)


def _above_four(fd: int) -> int:
    """`fd` moved to a descriptor number of at least 10 (the original is closed)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class Chromium:
    """Headless Chromium on a DevTools pipe: open pages, evaluate JavaScript, collect the pages' errors."""

    def __init__(self, executable: Path, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self._profile = tempfile.mkdtemp(prefix="edgetl-chromium-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # The child's ends must not already be 3 or 4: the first dup2 below would replace the other end.
        to_browser_read, from_browser_write = (_above_four(fd) for fd in (to_browser_read, from_browser_write))
        args = [
            str(executable),
            "--headless=new",
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-extensions",
            "--disable-component-update",
            "--disable-background-networking",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--mute-audio",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to start its sandbox as root
        # The protocol lives on descriptors 3 (browser reads) and 4 (browser writes); a small Python step puts
        # them there and execs the browser (sh cannot name descriptors above 9).
        self._process = subprocess.Popen(
            [sys.executable, "-c", _PLACE_PIPES, str(to_browser_read), str(from_browser_write), *args],
            pass_fds=(to_browser_read, from_browser_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._next_id = 0
        self._lock = threading.Lock()
        self._waiting: dict[int, queue.Queue[dict[str, Any]]] = {}
        self.page_errors: list[str] = []
        self._stderr_tail: list[str] = []
        threading.Thread(target=self._read, name="edgetl-cdp-reader", daemon=True).start()
        threading.Thread(target=self._drain_stderr, name="edgetl-chromium-stderr", daemon=True).start()
        self.version = self.call("Browser.getVersion").get("product", "unknown")

    def _drain_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr_tail = [*self._stderr_tail[-19:], line.decode(errors="replace").rstrip()]

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                self._dispatch(json.loads(raw))
        with self._lock:  # the browser is gone: wake everyone still waiting
            for waiting in self._waiting.values():
                waiting.put({"error": {"message": "Chromium exited"}})

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._lock:
                waiting = self._waiting.pop(message["id"], None)
            if waiting is not None:
                waiting.put(message)
            return
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "exception")
            self.page_errors.append(str(text).splitlines()[0])
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.page_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.page_errors.append(f"{entry.get('text', '')} {entry.get('url', '')}".strip())

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """One protocol command; its result, or BrowserError with the browser's message."""
        waiting: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
            self._waiting[message_id] = waiting
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        except OSError as error:
            raise BrowserError(f"Chromium is not running ({error}); {self._stderr_summary()}") from None
        try:
            reply = waiting.get(timeout=self.timeout_s)
        except queue.Empty:
            raise BrowserError(f"Chromium did not answer {method} within {self.timeout_s:.0f} s") from None
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}; {self._stderr_summary()}")
        return reply.get("result", {})

    def _stderr_summary(self) -> str:
        lines = [line for line in self._stderr_tail if line]
        return f"Chromium said: {lines[-1]}" if lines else "Chromium printed nothing"

    def open(self, url: str) -> str:
        """A new tab on `url`; returns its protocol session, with errors and console errors collected."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(domain, session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited); page exceptions raise."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=session,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "exception")
            raise BrowserError(f"the page threw: {str(text).splitlines()[0]}")
        return result.get("result", {}).get("value")

    def wait_for(self, session: str, name: str, expression: str, timeout_s: float) -> Any:
        """Poll until the page defines `name` (it is still loading), then evaluate `expression`."""
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(session, f"typeof {name} !== 'undefined'"):
            if self.page_errors:
                raise BrowserError(f"the page failed while loading: {self.page_errors[0]}")
            if time.monotonic() > deadline:
                raise BrowserError(f"the page did not define {name} within {timeout_s:.0f} s")
            time.sleep(0.1)
        return self.evaluate(session, expression)

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            if self._process.poll() is None:
                self.call("Browser.close")
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class PageSetting:
    """One tab of the bundle's page: which model it loads (None: the bundle's own) and its WASM threads."""

    model: str | None = None
    threads: int | None = None  # None: onnxruntime-web's default (half the cores, at most 4)

    def query(self, server: BundleServer) -> str:
        params = {}
        if self.model is not None:
            params["model"] = server.model_url(self.model)
        if self.threads is not None:
            params["threads"] = str(self.threads)
        return f"?{urlencode(params)}" if params else ""


@contextlib.contextmanager
def bundle_pages(
    bundle: Path,
    images: Sequence[Path],
    settings: Sequence[PageSetting],
    executable: Path,
    models: dict[str, Path] | None = None,
    timeout_s: float = 120.0,
) -> Iterator[tuple[Chromium, BundleServer, list[str]]]:
    """The bundle's page open once per setting, each loaded and ready; `models` are served for `PageSetting.model`."""
    with BundleServer(bundle, images, models) as server, Chromium(executable, timeout_s) as browser:
        page = f"{server.url}/{layout.BUNDLE_WEB_DIR}/{layout.BUNDLE_WEB_PAGE}"
        sessions = [browser.open(page + setting.query(server)) for setting in settings]
        for session in sessions:
            browser.wait_for(session, "window.edgetl", "window.edgetl.ready", timeout_s)
        yield browser, server, sessions


def _classify_all(browser: Chromium, server: BundleServer, session: str, count: int) -> list[dict[str, Any]]:
    results = []
    for index in range(count):
        result = browser.evaluate(session, f"window.edgetl.classifyUrl({json.dumps(server.image_url(index))})")
        results.append({"index": int(result["index"]), "logits": result["logits"]})
    return results


def _time_pages(
    browser: Chromium, server: BundleServer, sessions: list[str], rounds: int, runs_per_round: int, warmup: int
) -> tuple[list[list[float]], list[float]]:
    """Model latency per tab, the tabs taking turns round by round; and decode-to-label in the first tab."""
    url = json.dumps(server.image_url(0))
    samples: list[list[float]] = [[] for _ in sessions]
    end_to_end: list[float] = []
    for session in sessions:  # warm-up: the first runs allocate and pick kernels
        browser.evaluate(session, f"window.edgetl.timeModel({url}, {max(1, warmup)})")
    for _ in range(rounds):
        for session, collected in zip(sessions, samples, strict=True):
            collected += browser.evaluate(session, f"window.edgetl.timeModel({url}, {runs_per_round})")
        end_to_end += browser.evaluate(sessions[0], f"window.edgetl.timeEndToEnd({url}, {runs_per_round})")
    return samples, end_to_end


def _percentile(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 3)


def check_web_bundle(
    bundle: Path,
    paths: Sequence[Path],
    labels: Sequence[int],
    executable: Path,
    alternatives: dict[str, Path] | None = None,
    threads: Sequence[int] | None = None,
    rounds: int = 5,
    runs_per_round: int = 20,
    warmup: int = 3,
    timeout_s: float = 120.0,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """The shipped page on every image against `edgetl predict`, and the page's latency per model and thread count.

    `alternatives` (artefact -> ONNX model) are the other models that passed the build's budgets: each gets
    its own pixels model (made in a temporary folder, never in the bundle) and is timed in the same page,
    interleaved with the shipped one, so the report can say what shipping it instead would change.
    """
    from edgetl.bundle import read_bundle
    from edgetl.onnx.pixels import add_preprocessing
    from edgetl.runtime import load

    if not paths:
        raise BrowserError(f"{bundle}: no images to run the page on; a check of nothing is not a pass")
    info = read_bundle(bundle)
    shipped = str(info.info["model"]["artifact"])
    thread_counts = sorted(set(threads or (1, os.cpu_count() or 1)))
    predictor = load(bundle)
    try:
        expected = [predictor.logits(predictor.preprocessing.batch([path]))[0] for path in paths]
    finally:
        predictor.close()
    with tempfile.TemporaryDirectory(prefix="edgetl-web-") as scratch:
        models: dict[str, Path] = {}
        for name, model in (alternatives or {}).items():
            models[name] = Path(scratch) / f"{name}.onnx"
            add_preprocessing(model, models[name], info.preprocessing(), "any_size")
        settings = [
            PageSetting(None if name == shipped else name, count)
            for name in [shipped, *models]
            for count in thread_counts
        ]
        with bundle_pages(bundle, paths, settings, executable, models, timeout_s) as (browser, server, sessions):
            log(f"{browser.version}: the bundle's page on {len(paths)} val images")
            page = _classify_all(browser, server, sessions[0], len(paths))
            log(f"timing {', '.join([shipped, *models])} in the page with WASM threads {thread_counts}")
            samples, end_to_end = _time_pages(browser, server, sessions, rounds, runs_per_round, warmup)
            isolated = bool(browser.evaluate(sessions[0], "crossOriginIsolated"))
            actual_threads = [browser.evaluate(session, "window.edgetl.threads()") for session in sessions]
            if browser.page_errors:
                raise BrowserError(f"the page reported an error: {browser.page_errors[0]}")
            version = browser.version
        sizes = {shipped: (info.root / info.info["pixels_model"]["file"]).stat().st_size}
        sizes.update({name: path.stat().st_size for name, path in models.items()})
    got = np.asarray([r["logits"] for r in page], dtype=np.float32).reshape(len(paths), -1)
    want = np.asarray(expected, dtype=np.float32).reshape(len(paths), -1)
    page_labels, predict_labels = got.argmax(axis=1), want.argmax(axis=1)
    truth = np.asarray(labels)
    disagreements = [
        {
            "image": str(paths[i]),
            "page": int(page_labels[i]),
            "predict": int(predict_labels[i]),
            "page_margin": _margin(got[i]),
            "predict_margin": _margin(want[i]),
        }
        for i in map(int, np.flatnonzero(page_labels != predict_labels))
    ]
    timings = []
    for setting, collected, count in zip(settings, samples, actual_threads, strict=True):
        name = setting.model or shipped
        timings.append(
            {
                "artifact": name,
                "shipped": name == shipped,
                "threads": count,
                "p50_ms": _percentile(collected, 50),
                "p90_ms": _percentile(collected, 90),
                "runs": len(collected),
                "model_bytes": sizes[name],
            }
        )
    agree = int((page_labels == predict_labels).sum())
    return {
        "browser": version,
        "machine": describe_machine(),
        "images": len(paths),
        "agreement": agree,
        "agreement_percent": 100.0 * agree / len(paths),
        "correct": int((page_labels == truth).sum()),
        "predict_correct": int((predict_labels == truth).sum()),
        "max_abs_logit_diff": float(np.abs(got - want).max()),
        "disagreements": disagreements,
        "cross_origin_isolated": isolated,
        "latency": timings,
        "end_to_end": {
            "artifact": shipped,
            "threads": actual_threads[0],
            "p50_ms": _percentile(end_to_end, 50),
            "what": "classify(file): decode the image in the browser + the model, one val image",
        },
        "method": f"{rounds} interleaved rounds x {runs_per_round} runs per tab after {max(1, warmup)} warm-up runs, "
        "batch 1, "
        "performance.now() around session.run on one val image's decoded pixels; one tab per model and thread count",
        "per_image": [
            {"image": str(p), "page": int(a), "predict": int(b)}
            for p, a, b in zip(paths, page_labels, predict_labels, strict=True)
        ],
    }


def _margin(logits: np.ndarray) -> float:
    """Top-1 minus top-2 logit: how close a label was to flipping."""
    top = np.sort(logits)[::-1]
    return round(float(top[0] - top[1]), 4) if top.size > 1 else 0.0


def require_agreement(results: dict[str, Any], floor_percent: float, classes: list[str]) -> None:
    """BrowserError (exit 4) when the page's labels agree with `edgetl predict` on fewer than `floor_percent` %.

    The page decodes with the browser and resizes in the graph, so a few borderline images may flip;
    more than the floor means the shipped page classifies differently from what the report measured.
    """
    if results["images"] == 0:
        raise BrowserError("the web page was checked on no images: nothing was compared")
    if results["agreement_percent"] >= floor_percent:
        return
    examples = "; ".join(
        f"{Path(d['image']).name}: page {classes[d['page']]}, predict {classes[d['predict']]}"
        for d in results["disagreements"][:3]
    )
    raise BrowserError(
        f"the web page's labels agree with edgetl predict on {results['agreement']} of {results['images']} val images "
        f"({results['agreement_percent']:.1f} % < benchmark.min_runtime_agreement {floor_percent:g} %): {examples}",
        hint="the bundle's page would classify differently from what the report measured",
    )
