"""Per-channel vs per-tensor int8 weights on the suite's models: the gap cross-layer equalization would close.

    python benchmarks/weight_granularity.py [--runs runs/suite] [--only NAME ...]

Cross-layer equalization (Nagel et al., 2019) rescales conv pairs so that one *per-tensor* weight
scale fits every channel of a depthwise conv. edgetl quantizes weights per output channel (ONNX
Runtime and TensorRT both run that), which removes the same problem at the source, and
EfficientNet-Lite's ReLU6 is not scale-equivariant, so CLE would change the fp32 model. This
measures how large the problem is: each finished suite run all-int8 (minmax ranges on its
calibration images, the stem in float) with per-channel and with per-tensor weights, on val.
Writes `benchmarks/results/weight_granularity.{json,md}`, naming the CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import write_results  # noqa: E402
from benchmarks.ptq import finished_runs  # noqa: E402
from edgetl.data.split import read_split  # noqa: E402
from edgetl.machine import describe_machine, int8_saturates  # noqa: E402
from edgetl.onnx import tools as onnx_tools  # noqa: E402
from edgetl.preprocessing import read_preprocessing  # noqa: E402
from edgetl.quantization.accuracy_aware import TuningSet, infer_logits, model_feed  # noqa: E402
from edgetl.quantization.calibration import ImageCalibrationReader, compute_ranges  # noqa: E402
from edgetl.quantization.qdq import QuantSettings, prepare, quantize_with_ranges, resolve_float_nodes  # noqa: E402

CALIBRATION_IMAGES = 300


def measure_run(run: Path, work: Path) -> dict[str, Any]:
    pre = read_preprocessing(run / "preprocessing.json")
    split = read_split(run / "data" / "split.json")
    pool, _ = split.paths("calibration_pool")
    val, val_labels = split.paths("val")
    prepared = work / "prepared.onnx"
    prepare(run / "models" / "model_fp32.onnx", prepared)
    ranges = compute_ranges(prepared, ImageCalibrationReader(pool[:CALIBRATION_IMAGES], pre, 16, "input"), "minmax")
    float_nodes = resolve_float_nodes(onnx_tools.load_model(prepared), ["first_conv"], [])
    batch, labels = pre.batch(val), np.asarray(val_labels)
    reference = infer_logits(prepared, batch)
    scores = TuningSet(np.empty(0), labels, reference.argmax(1), reference)
    row: dict[str, Any] = {"run": run.name, "fp32_accuracy": float((reference.argmax(1) == labels).mean())}
    for name, per_channel in (("per-channel", True), ("per-tensor", False)):
        quantized = work / f"{name}.onnx"
        settings = QuantSettings("uint8", "int8", per_channel, reduce_range=int8_saturates())
        quantize_with_ranges(prepared, quantized, ranges, settings, float_nodes, model_feed(prepared, batch))
        logits = infer_logits(quantized, batch)
        row[name] = {
            "accuracy": float((logits.argmax(1) == labels).mean()),
            "agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "logit_sqnr_db": float(scores.logit_sqnr_db(logits) or 0.0),
        }
        print(f"weight granularity: {run.name}: {name}: {row[name]}", flush=True)
    return row


def render(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        "# Per-channel vs per-tensor int8 weights (all-int8, val)",
        "",
        f"Machine: {machine['cpu']}, {machine['usable_cpus']} CPUs. The gap below is what cross-layer equalization "
        "exists to close for per-tensor weights; edgetl quantizes weights per channel.",
        "",
        "| dataset | fp32 top-1 | per-channel top-1 / agreement / SQNR | per-tensor top-1 / agreement / SQNR |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        cells = [
            f"{row[k]['accuracy']:.1%} / {row[k]['agreement']:.1%} / {row[k]['logit_sqnr_db']:.1f} dB"
            for k in ("per-channel", "per-tensor")
        ]
        lines.append(f"| {row['run']} | {row['fp32_accuracy']:.1%} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "suite")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "weight_granularity")
    args = parser.parse_args(argv)
    rows = []
    for run in finished_runs(args.runs, args.only):
        with tempfile.TemporaryDirectory(prefix="edgetl-granularity-") as work:
            rows.append(measure_run(run, Path(work)))
    write_results(args.out, {"machine": describe_machine(), "rows": rows}, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
