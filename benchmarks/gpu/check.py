"""GPU check for a lent NVIDIA machine: what runs there, measured, in one script that fits in 10 minutes.

    python benchmarks/gpu/check.py [--out $OUT/gpu_check.json] [--epochs 3]

The lent machines have CUDA, PyTorch and onnxruntime but no TensorRT and no network, so each part
runs when what it needs is importable and otherwise records why it was skipped:
1. the environment: GPU, CUDA, torch, onnxruntime providers, TensorRT;
2. CUDA fine-tuning with mixed precision: `edgetl build` of a generated 10-class set (scikit-learn's
   digits, no download) with `finetune.device: cuda` and `mixed_precision: auto` (fp16 autocast),
   then the same build on the CPU for a ratio measured in the same run;
3. the fp32 and fp16 ONNX of that build under onnxruntime's CUDAExecutionProvider (onnxruntime-gpu,
   carried as a wheel) against the CPU provider: top-1 agreement, max |logit diff|, p50 latency;
4. a TensorRT engine from the build's bundle (`edgetl engine build`) when TensorRT and pycuda import.
Writes one JSON file; nothing in it is estimated.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0]}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
            info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    except ImportError:
        info["torch"] = None
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    info["tensorrt"] = importlib.util.find_spec("tensorrt") is not None
    info["pycuda"] = importlib.util.find_spec("pycuda") is not None
    return info


def _profile(data: Path, out: Path, device: str, epochs: int) -> Path:
    import yaml

    profile = {
        "version": 1,
        "name": f"gpu-check-{device}",
        "seed": 0,
        "output_dir": str(out),
        "data": {"root": str(data), "holdout_fraction": 0.15},
        "backbone": {"name": "efficientnet_lite0"},
        "finetune": {"strategy": "full", "epochs": epochs, "batch_size": 64, "device": device},
        "optimize": {"fp16": {"enabled": True}, "int8": {"enabled": False}},
        "target": "nvidia-gpu",
        "benchmark": {"iterations": 20, "rounds": 2, "batch_sizes": [1, 8]},
    }
    path = out.parent / f"{device}.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def fine_tune(work: Path, epochs: int) -> dict[str, Any]:
    """The same build on CUDA (fp16 autocast) and on the CPU; wall time of each and the fine-tune's accuracy."""
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "make_digits.py"), "--out", str(work / "digits")], check=True
    )
    results: dict[str, Any] = {}
    for device in ("cuda", "cpu"):
        out = work / device
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "edgetl", "build", str(_profile(work / "digits", out, device, epochs)), "-q"],
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
        if done.returncode not in (0, 3):  # 3: a budget failed, the run still exists
            results[device] = {"error": (done.stderr or done.stdout).strip().splitlines()[-1:], "seconds": seconds}
            continue
        report = json.loads((out / "report.json").read_text())
        training = report["training"]
        results[device] = {
            "build_seconds": round(seconds, 1),
            "train_seconds": round(training["train_seconds"], 1),
            "epochs_run": training["epochs_run"],
            "device": training["device"],
            "mixed_precision": training["mixed_precision"],
            "val_top1": {name: a.get("accuracy") for name, a in report["artifacts"].items()},
            "run_dir": str(out),
        }
    if "train_seconds" in results.get("cuda", {}) and "train_seconds" in results.get("cpu", {}):
        results["cpu_over_cuda_train_time"] = round(
            results["cpu"]["train_seconds"] / results["cuda"]["train_seconds"], 2
        )
    return results


def onnx_on_cuda(run_dir: Path) -> dict[str, Any]:
    """fp32 and fp16 ONNX with onnxruntime's CUDA provider, against the CPU provider on the same val images."""
    import onnxruntime as ort

    from edgetl import layout
    from edgetl.data.split import read_split
    from edgetl.preprocessing import read_preprocessing

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"skipped": f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (carry onnxruntime-gpu)"}
    pre = read_preprocessing(run_dir / layout.PREPROCESSING)
    paths, _ = read_split(run_dir / layout.SPLIT).paths("val")
    images = pre.batch(paths[:256])
    reference = ort.InferenceSession(str(run_dir / layout.ONNX_FP32), providers=["CPUExecutionProvider"])
    expected = reference.run(None, {layout.INPUT_NAME: images})[0]
    results: dict[str, Any] = {"images": len(images)}
    for name, file in (("onnx_fp32", layout.ONNX_FP32), ("onnx_fp16", layout.ONNX_FP16)):
        session = ort.InferenceSession(str(run_dir / file), providers=["CUDAExecutionProvider"])
        actual = session.run(None, {layout.INPUT_NAME: images})[0]
        timing = _latency_ms(session, layout.INPUT_NAME, images[:1])
        results[name] = {
            "provider": session.get_providers()[0],
            "top1_agreement_with_cpu_fp32": float((actual.argmax(1) == expected.argmax(1)).mean()),
            "max_abs_logit_diff": float(np.abs(actual - expected).max()),
            "latency_ms_batch1": timing,
        }
    return results


def _latency_ms(
    session: Any, input_name: str, batch: np.ndarray, warmup: int = 20, runs: int = 200
) -> dict[str, float]:
    """p50/p90 of `runs` batch-1 inferences, host clock (CUDA EP copies in and out inside session.run)."""
    for _ in range(warmup):
        session.run(None, {input_name: batch})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {input_name: batch})
        times.append((time.perf_counter() - started) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90))}


def tensorrt_engine(run_dir: Path) -> dict[str, Any]:
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("pycuda") is None:
        return {"skipped": "TensorRT or pycuda not importable on this machine"}
    done = subprocess.run(
        [sys.executable, "-m", "edgetl", "engine", "build", str(run_dir / "bundle")], capture_output=True, text=True
    )
    return {"returncode": done.returncode, "output": (done.stdout + done.stderr).strip().splitlines()[-10:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_check.json")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, Any] = {"environment": environment()}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if result["environment"].get("cuda_available"):
            result["fine_tune"] = fine_tune(work, args.epochs)
            run = result["fine_tune"].get("cuda", {}).get("run_dir")
            if run:
                result["onnxruntime_cuda"] = onnx_on_cuda(Path(run))
                result["tensorrt"] = tensorrt_engine(Path(run))
        else:
            result["fine_tune"] = {"skipped": "torch sees no CUDA device"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
