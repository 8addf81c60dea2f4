"""Peak resident memory of an artefact: a fresh process loads it with its own backend's runner and runs it.

A fresh process so allocator caches and other models in this one do not pollute the figure; the
after-import baseline separates the runtime's own footprint from what the model adds. The child
opens the model through the backend catalogue, so every runtime is measured the same way and a
new backend needs nothing here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

_CHILD_TIMEOUT_S = 120.0

_CHILD_SCRIPT = r"""
import json, resource, sys

def rss():
    # Linux carries the parent's high-water mark into ru_maxrss across fork+exec; VmHWM belongs to this image.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux

backend_name, path = sys.argv[1], sys.argv[2]
batch, threads, runs = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
shape = json.loads(sys.argv[6])
import importlib
from pathlib import Path
import numpy as np
from edgetl.backends import get_backend
backend = get_backend(backend_name)
for module in backend.requires:
    importlib.import_module(module)
baseline = rss()
runner = backend.make_runner(Path(path), "memory", threads)
runner.activate()
x = np.zeros([runner.fixed_batch or batch, *shape], dtype=np.float32)
for _ in range(runs):
    runner.infer(x)
print(json.dumps({"baseline_rss_bytes": baseline, "peak_rss_bytes": rss(), "input_shapes": {"input": list(x.shape)}}))
"""


def measure_peak_memory(
    model_path: Path,
    batch: int = 1,
    threads: int = 1,
    runtime: str = "onnxruntime",
    input_shape: list[int] | None = None,
) -> dict[str, Any]:
    """Peak RSS of a fresh process running `model_path` with backend `runtime`, and the model's share of it.

    `input_shape` is one image's (C, H, W), default 3x224x224; a fixed-batch model runs at its batch.
    """
    from edgetl.backends import get_backend

    backend = get_backend(runtime)
    if not backend.host_memory:
        raise ValueError(f"runtime {runtime!r} does not run in host memory")
    if batch < 1 or threads < 1:
        raise ValueError("batch and threads must be >= 1")
    shape = list(input_shape or [3, 224, 224])
    runs = 3
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # the child must import edgetl
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    command = [
        sys.executable,
        "-c",
        _CHILD_SCRIPT,
        runtime,
        str(Path(model_path)),
        str(batch),
        str(threads),
        str(runs),
        json.dumps(shape),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_CHILD_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as error:
        tail = (error.stderr or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise RuntimeError(f"peak-memory child timed out after {_CHILD_TIMEOUT_S:.0f} s: {tail}") from None
    if done.returncode != 0:
        raise RuntimeError(f"peak-memory child failed (exit {done.returncode}): {done.stderr[-2000:].strip()}")
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"peak-memory child printed no result: {done.stderr[-2000:].strip()}") from None
    peak, baseline = int(report["peak_rss_bytes"]), int(report["baseline_rss_bytes"])
    return {
        "peak_rss_bytes": peak,
        "model_rss_bytes": peak - baseline,
        "baseline_rss_bytes": baseline,
        "runtime": runtime,
        "batch": batch,
        "threads": threads,
        "input_shapes": report["input_shapes"],
        "method": (
            f"peak RSS of a fresh process (ru_maxrss; on Linux VmHWM, the same high-water mark without the "
            f"parent's share that ru_maxrss inherits across fork+exec) that imports {', '.join(backend.requires)} "
            f"and edgetl's backend catalogue, loads the model with the {backend.name} runner and runs {runs} "
            f"inferences on zeros at batch {batch} with {threads} thread{'s' if threads != 1 else ''}; "
            "model_rss_bytes is that peak minus the peak right after those imports"
        ),
    }
