"""edgetl's deployed artefact against the peers a user would reach for, on one finished run, in one process.

    python benchmarks/peers.py --run-dir runs/suite/hymenoptera [--calibration 300] [--out ...]

Peers (all at 1 thread, batch 1, on the same val images, latency interleaved in rounds so load and
clock changes hit every row alike):
- ONNX Runtime with stock settings on the fp32 export (SessionOptions() defaults, threads pinned);
- OpenVINO with stock settings on the fp32 export (its default precision: bf16 on CPUs with AVX-512
  bf16 or AMX, f32 elsewhere), and with the LATENCY hint;
- NNCF post-training quantization (`nncf.quantize`, default preset, the run's own calibration pool,
  never val) compiled by OpenVINO with stock settings;
- `torch.compile` (inductor) of the training checkpoint, and eager PyTorch;
- every artefact the run measured (edgetl's ONNX Runtime and OpenVINO models), and which one it deployed.
Writes `benchmarks/results/peers.{json,md}`, naming the CPU. Ratios within this one run are what
to compare; absolute milliseconds depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import write_results  # noqa: E402
from edgetl import layout  # noqa: E402
from edgetl.backends import ARTIFACTS, backend_for  # noqa: E402
from edgetl.backends.base import Runner  # noqa: E402
from edgetl.backends.pytorch.runner import TorchRunner  # noqa: E402
from edgetl.data.split import read_split  # noqa: E402
from edgetl.machine import describe_machine, package_versions  # noqa: E402
from edgetl.measure.latency import measure_latency  # noqa: E402
from edgetl.preprocessing import read_preprocessing  # noqa: E402


class StockOnnxRuntime(Runner):
    """ONNX Runtime as its README shows it: `InferenceSession(path)`, only the thread count pinned."""

    def __init__(self, path: Path, name: str, threads: int) -> None:
        super().__init__(name)
        self.path, self.threads, self.session = path, threads, None

    def _activate(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def _deactivate(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        return {"runtime": "onnxruntime", "settings": f"SessionOptions() defaults, {self.threads} thread(s)"}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch.astype(np.float32)})[0]


class StockOpenVINO(Runner):
    """`core.compile_model(model, "CPU", config)` with the given config (stock: only the thread count)."""

    def __init__(self, model: Any, name: str, config: dict[str, Any]) -> None:
        super().__init__(name)
        self.model, self.config = model, config
        self.request: Any = None

    def _activate(self) -> None:
        import openvino as ov

        compiled = ov.Core().compile_model(self.model, "CPU", self.config)
        self.request = compiled.create_infer_request()
        self.precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))

    def _deactivate(self) -> None:
        self.request = None

    def describe(self) -> dict[str, Any]:
        return {"runtime": "openvino", "settings": self.config, "inference_precision": self.precision}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
        return np.array(self.request.get_output_tensor(0).data)


class CompiledTorch(TorchRunner):
    """`torch.compile(model)` (inductor, default mode), compiled on the first call (excluded from timing)."""

    def _activate(self) -> None:
        import torch

        super()._activate()
        self.model = torch.compile(self.model)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"providers": ["torch.compile (inductor)"]}


def nncf_int8(fp32_onnx: Path, calibration: np.ndarray, out: Path) -> tuple[Any, float]:
    """NNCF PTQ of the fp32 export on the calibration images; returns the quantized model and seconds."""
    import time

    import nncf
    import openvino as ov

    started = time.perf_counter()
    model = ov.Core().read_model(str(fp32_onnx))
    dataset = nncf.Dataset(list(calibration), lambda image: image[None])
    quantized = nncf.quantize(model, dataset, subset_size=len(calibration))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return ov.Core().read_model(str(out)), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibration", type=int, default=300, help="calibration images for NNCF (edgetl's default)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "peers")
    args = parser.parse_args()

    run = args.run_dir.resolve()
    manifest = json.loads((run / layout.MANIFEST).read_text())
    report = json.loads((run / layout.REPORT_JSON).read_text())
    deployed = manifest["deployed_artifact"]
    pre = read_preprocessing(run / layout.PREPROCESSING)
    split = read_split(run / layout.SPLIT)
    paths, labels = split.paths("val")
    pool, _ = split.paths("calibration_pool")
    val = pre.batch(paths)
    calibration = pre.batch(pool[: args.calibration])
    fp32 = run / layout.ONNX_FP32

    with tempfile.TemporaryDirectory() as work:
        nncf_model, nncf_seconds = nncf_int8(fp32, calibration, Path(work) / "nncf_int8.xml")
        import openvino as ov

        fp32_ov = ov.Core().read_model(str(fp32))
        threads = {"INFERENCE_NUM_THREADS": args.threads}
        runners: list[Runner] = [
            StockOnnxRuntime(fp32, "peer: ONNX Runtime stock, fp32", args.threads),
            StockOpenVINO(fp32_ov, "peer: OpenVINO stock, fp32 ONNX", threads),
            StockOpenVINO(fp32_ov, "peer: OpenVINO LATENCY hint, fp32 ONNX", threads | {"PERFORMANCE_HINT": "LATENCY"}),
            StockOpenVINO(nncf_model, "peer: NNCF PTQ int8, OpenVINO stock", threads),
            CompiledTorch(run / layout.CHECKPOINT, "peer: torch.compile", args.threads),
        ]
        measured = [name for name in report["artifacts"] if ARTIFACTS[name].stage != "package"]
        runners += [backend_for(name).make_runner(run / ARTIFACTS[name].file, name, args.threads) for name in measured]
        predictions: dict[str, np.ndarray] = {}
        for runner in runners:
            runner.activate()
            predictions[runner.name] = np.concatenate(
                [runner.infer_any_batch(val[i : i + 16]) for i in range(0, len(val), 16)]
            ).argmax(1)
        latency = measure_latency(runners, val[:1], warmup=30, iterations=args.iterations, rounds=args.rounds)
        rows = []
        for runner in runners:
            correct = int((predictions[runner.name] == np.asarray(labels)).sum())
            rows.append(
                {
                    "name": runner.name,
                    "edgetl": not runner.name.startswith("peer:"),
                    "deployed": runner.name == deployed,
                    "correct": correct,
                    "total": len(labels),
                    "accuracy": correct / len(labels),
                    "p50_ms": latency[runner.name].p50,
                    "p90_ms": latency[runner.name].p90,
                    "execution": runner.describe(),
                }
            )
            runner.deactivate()
    best_peer = min((r for r in rows if not r["edgetl"]), key=lambda r: r["p50_ms"])
    mine = next(r for r in rows if r["deployed"])
    result = {
        "machine": describe_machine(),
        "versions": package_versions("onnxruntime", "openvino", "nncf", "torch"),
        "run": str(run),
        "profile": report["profile"],
        "target": report["target"],
        "deployed": deployed,
        "deployment": report.get("deployment"),
        "nncf_seconds": nncf_seconds,
        "calibration_images": len(calibration),
        "settings": {"threads": args.threads, "iterations": args.iterations, "rounds": args.rounds, "batch": 1},
        "rows": rows,
        "deployed_vs_fastest_peer": best_peer["p50_ms"] / mine["p50_ms"],
        "fastest_peer": best_peer["name"],
    }
    write_results(args.out, result, render)


def render(result: dict[str, Any]) -> str:
    machine = result["machine"]
    flags = ", ".join(machine.get("cpu_flags") or [])
    lines = [
        "# edgetl vs peers: one run, one process",
        "",
        f"Machine: {machine['cpu']}, {machine['usable_cpus']} CPUs (flags: {flags}); "
        f"{result['settings']['threads']} thread, batch 1, {result['settings']['iterations']} timed runs each, "
        f"interleaved in {result['settings']['rounds']} rounds. Run `{Path(result['run']).name}` (target "
        f"`{result['target']}`), {result['rows'][0]['total']} val images.",
        "",
        "| model | top-1 | p50 ms | p90 ms | vs deployed |",
        "|---|---|---|---|---|",
    ]
    deployed = next(r for r in result["rows"] if r["deployed"])
    for row in sorted(result["rows"], key=lambda r: r["p50_ms"]):
        name = f"**{row['name']} (edgetl, deployed)**" if row["deployed"] else row["name"]
        lines.append(
            f"| {name} | {row['accuracy']:.1%} ({row['correct']}/{row['total']}) | {row['p50_ms']:.3f} | "
            f"{row['p90_ms']:.3f} | {row['p50_ms'] / deployed['p50_ms']:.2f}x |"
        )
    lines += [
        "",
        f"edgetl's deployed `{result['deployed']}` is {result['deployed_vs_fastest_peer']:.2f}x the speed of the "
        f"fastest peer ({result['fastest_peer']}). NNCF PTQ took {result['nncf_seconds']:.0f} s on "
        f"{result['calibration_images']} calibration images (edgetl's calibration pool, never val).",
    ]
    if result.get("deployment"):
        lines += ["", f"Why edgetl shipped it: {result['deployment']['reason']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
