"""Post-training int8 variants on the suite's fine-tuned models: plain, bias-corrected, AdaRound, QAT.

    python benchmarks/ptq.py [--runs runs/suite] [--only NAME ...] [--qat]

For every finished run of `benchmarks/suite.py` (its `models/model_fp32.onnx`, checkpoint and
split), quantize the fp32 model all-int8 the way the optimize stage does (minmax ranges from the
run's calibration images, `reduce_range: auto`, `keep_float: [first_conv]`), once plainly, once
after empirical bias correction, once after AdaRound (alone and followed by bias correction), and
(with `--qat`) once after 2 epochs of quantization-aware training. Each is measured on val
(accuracy, top-1 agreement with fp32, logit SQNR) and on the tuning images (train + holdout) the
fallback decides on, so the table also shows whether the tuning gates track val. Nothing here is
timed: every variant has the same int8 graph, so the same speed. Writes
`benchmarks/results/ptq.{json,md}`, naming the CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import write_results  # noqa: E402
from edgetl.data.split import read_split  # noqa: E402
from edgetl.machine import describe_machine, int8_saturates  # noqa: E402
from edgetl.onnx import tools as onnx_tools  # noqa: E402
from edgetl.preprocessing import read_preprocessing  # noqa: E402
from edgetl.quantization.accuracy_aware import TuningSet, infer_logits, model_feed  # noqa: E402
from edgetl.quantization.adaround import adaround  # noqa: E402
from edgetl.quantization.bias_correction import correct_biases  # noqa: E402
from edgetl.quantization.calibration import ImageCalibrationReader, compute_ranges  # noqa: E402
from edgetl.quantization.qdq import QuantSettings, prepare, quantize_with_ranges, resolve_float_nodes  # noqa: E402

CALIBRATION_IMAGES = 300
TUNING_IMAGES = 300


def _scores(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    tuning = TuningSet(np.empty(0), labels, reference.argmax(1), reference)
    return {
        "accuracy": float((logits.argmax(1) == labels).mean()),
        "fp32_accuracy": float((reference.argmax(1) == labels).mean()),
        "agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
        "logit_sqnr_db": float(tuning.logit_sqnr_db(logits) or 0.0),
    }


def measure_run(run: Path, work: Path, with_qat: bool) -> dict[str, Any]:
    pre = read_preprocessing(run / "preprocessing.json")
    split = read_split(run / "data" / "split.json")
    pool, pool_labels = split.paths("calibration_pool")
    val, val_labels = split.paths("val")
    prepared = work / "prepared.onnx"
    prepare(run / "models" / "model_fp32.onnx", prepared)
    calibration = pool[:CALIBRATION_IMAGES]
    ranges = compute_ranges(prepared, ImageCalibrationReader(calibration, pre, 16, "input"), "minmax")
    settings = QuantSettings("uint8", "int8", True, reduce_range=int8_saturates())
    float_nodes = resolve_float_nodes(onnx_tools.load_model(prepared), ["first_conv"], [])
    sets = {
        "val": (pre.batch(val), np.asarray(val_labels)),
        "tuning": (pre.batch(pool[:TUNING_IMAGES]), np.asarray(pool_labels[:TUNING_IMAGES])),
    }
    reference = {name: infer_logits(prepared, batch) for name, (batch, _) in sets.items()}
    feed = model_feed(prepared, sets["val"][0])
    variants: dict[str, Any] = {}

    def score(name: str, model: Path, seconds: float, extra: dict[str, Any] | None = None) -> None:
        variants[name] = (
            {
                split_name: _scores(infer_logits(model, batch), reference[split_name], labels)
                for split_name, (batch, labels) in sets.items()
            }
            | {"seconds": seconds}
            | (extra or {})
        )
        print(f"ptq: {run.name}: {name}: val agreement {variants[name]['val']['agreement']:.1%}", flush=True)

    started = time.perf_counter()
    plain = work / "plain.onnx"
    quantize_with_ranges(prepared, plain, ranges, settings, float_nodes, feed)
    score("all-int8", plain, time.perf_counter() - started)

    started = time.perf_counter()
    corrected_fp32, corrected = work / "corrected_fp32.onnx", work / "corrected.onnx"
    batches = [pre.batch(calibration[i : i + 16]) for i in range(0, min(64, len(calibration)), 16)]
    record = correct_biases(prepared, corrected_fp32, ranges, settings, float_nodes, batches, work)
    quantize_with_ranges(corrected_fp32, corrected, ranges, settings, float_nodes, feed)
    score("bias correction", corrected, time.perf_counter() - started, {"correction": record})

    started = time.perf_counter()
    rounded_fp32, rounded = work / "adaround_fp32.onnx", work / "adaround.onnx"
    rounding = adaround(prepared, rounded_fp32, ranges, settings, float_nodes, batches, work)
    quantize_with_ranges(rounded_fp32, rounded, ranges, settings, float_nodes, feed)
    summary = {k: v for k, v in rounding.items() if k != "layers"}
    score("AdaRound", rounded, time.perf_counter() - started, {"adaround": summary})

    started = time.perf_counter()
    both_fp32, both = work / "adaround_corrected_fp32.onnx", work / "adaround_corrected.onnx"
    record = correct_biases(rounded_fp32, both_fp32, ranges, settings, float_nodes, batches, work)
    quantize_with_ranges(both_fp32, both, ranges, settings, float_nodes, feed)
    score(
        "AdaRound + bias correction",
        both,
        time.perf_counter() - started + summary["seconds"],
        {"adaround": summary, "correction": record},
    )

    if with_qat:
        started = time.perf_counter()
        qat = _qat_model(run, work, pre, split, calibration, settings)
        qat_prepared = work / "qat_prepared.onnx"
        prepare(qat, qat_prepared)
        qat_ranges = compute_ranges(qat_prepared, ImageCalibrationReader(calibration, pre, 16, "input"), "minmax")
        quantized = work / "qat_int8.onnx"
        qat_float = resolve_float_nodes(onnx_tools.load_model(qat_prepared), ["first_conv"], [])
        quantize_with_ranges(qat_prepared, quantized, qat_ranges, settings, qat_float, feed)
        score("QAT (2 epochs)", quantized, time.perf_counter() - started)
    return {"run": run.name, "reduce_range": settings.reduce_range, "val_images": len(val), "variants": variants}


def _qat_model(run: Path, work: Path, pre: Any, split: dict, calibration: list[Path], settings: QuantSettings) -> Path:
    """The optimize stage's QAT (defaults of optimize.int8.qat), exported to ONNX."""
    from edgetl.onnx.export import export_onnx
    from edgetl.profile import QatConfig
    from edgetl.quantization.qat import qat_from_checkpoint

    outcome, _, _ = qat_from_checkpoint(
        run / "models" / "model.pt", split.paths("train"), calibration, QatConfig(), ["first_conv"],
        False, settings.reduce_range, 0,
    )  # fmt: skip
    path = work / "qat_fp32.onnx"
    onnx_tools.save_model(export_onnx(outcome.model, pre.input_shape, "dynamic", 18), path)
    return path


def finished_runs(folder: Path, only: list[str] | None) -> list[Path]:
    """Suite runs with an exported fp32 model (the suite's fine-tune references stop after training), by name."""
    runs = sorted(
        p for p in folder.iterdir() if (p / "manifest.json").is_file() and (p / "models" / "model_fp32.onnx").is_file()
    )
    return [run for run in runs if not only or run.name in only]


def render(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        "# Post-training int8 variants on the suite's fine-tuned models",
        "",
        f"Machine: {machine['cpu']}, {machine['usable_cpus']} CPUs. All-int8 (nothing kept in float but the stem), "
        "minmax calibration on train images; agreement and logit SQNR against the run's own fp32 model.",
        "",
        "| dataset | variant | val top-1 (fp32) | val agreement | val logit SQNR | tuning agreement | tuning SQNR "
        "| s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        for name, v in row["variants"].items():
            val, tuning = v["val"], v["tuning"]
            lines.append(
                f"| {row['run']} | {name} | {val['accuracy']:.1%} ({val['fp32_accuracy']:.1%}) "
                f"| {val['agreement']:.1%} "
                f"| {val['logit_sqnr_db']:.1f} dB | {tuning['agreement']:.1%} | {tuning['logit_sqnr_db']:.1f} dB "
                f"| {v['seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "suite")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--qat", action="store_true", help="also quantization-aware training (minutes per run)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ptq")
    args = parser.parse_args(argv)
    rows = []
    for run in finished_runs(args.runs, args.only):
        with tempfile.TemporaryDirectory(prefix="edgetl-ptq-") as work:
            rows.append(measure_run(run, Path(work), args.qat))
    write_results(args.out, {"machine": describe_machine(), "rows": rows}, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
