"""Which route makes LiteRT's int8 model: ai-edge-quantizer on the fp32 .tflite, or litert-torch's PT2E int8.

Both quantize the same run's checkpoint with the same calibration images (the optimize stage's list
in optimize/quantization.json: train + holdout, never val) and are scored on the whole val split
against the fp32 PyTorch model, then timed with ai-edge-litert's interpreter (1 thread, batch 1,
interleaved rounds). Usage (after `edgetl build profiles/android-arm64.yaml`):

    python benchmarks/litert_int8.py runs/android-arm64
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import write_results  # noqa: E402
from edgetl import layout  # noqa: E402
from edgetl.backbones.checkpoint import load_checkpoint  # noqa: E402
from edgetl.backends.litert.convert import convert_checkpoint, quantize_int8  # noqa: E402
from edgetl.backends.litert.runner import LiteRTRunner  # noqa: E402
from edgetl.data.split import read_split  # noqa: E402
from edgetl.machine import describe_machine, package_versions  # noqa: E402
from edgetl.preprocessing import read_preprocessing  # noqa: E402

ROUNDS, RUNS = 5, 30


def pt2e_int8(checkpoint: Path, target: Path, calibration: np.ndarray) -> None:
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = load_checkpoint(checkpoint).build_model().eval()
    sample = (torch.from_numpy(calibration[:1]),)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = prepare_pt2e(torch.export.export(model, sample).module(), quantizer)
    with torch.no_grad():
        for i in range(len(calibration)):
            prepared(torch.from_numpy(calibration[i : i + 1]))
    converted = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(converted, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(target))


def main(run: Path) -> None:
    import torch

    pre = read_preprocessing(run / layout.PREPROCESSING)
    split = read_split(run / layout.SPLIT)
    root = Path(split.root)
    listed = json.loads((run / layout.QUANTIZATION).read_text())["calibration_images"]
    calibration = pre.batch([root / p for p in listed])
    val_paths, val_labels = split.paths("val")
    val, labels = pre.batch(val_paths), np.array(val_labels)
    with torch.inference_mode():
        reference = load_checkpoint(run / layout.CHECKPOINT).build_model().eval()(torch.from_numpy(val)).numpy()
    work = Path(tempfile.mkdtemp())
    fp32 = work / "fp32.tflite"
    convert_checkpoint(run / layout.CHECKPOINT, fp32, list(pre.input_shape))
    routes = {"fp32 (litert-torch)": fp32}
    seconds = {}
    start = time.perf_counter()
    quantize_int8(fp32, work / "aeq.tflite", calibration)
    seconds["ai-edge-quantizer static_wi8_ai8"] = time.perf_counter() - start
    routes["ai-edge-quantizer static_wi8_ai8"] = work / "aeq.tflite"
    start = time.perf_counter()
    pt2e_int8(run / layout.CHECKPOINT, work / "pt2e.tflite", calibration)
    seconds["litert-torch PT2E symmetric per-channel"] = time.perf_counter() - start
    routes["litert-torch PT2E symmetric per-channel"] = work / "pt2e.tflite"
    runners = {name: LiteRTRunner(path, name, threads=1) for name, path in routes.items()}
    rows: dict[str, dict] = {}
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():
        runner.activate()
        logits = runner.infer_any_batch(val)
        rows[runner.name] = {
            "top1": float((logits.argmax(1) == labels).mean()),
            "agreement_with_torch_fp32": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_logit_diff": float(np.abs(logits - reference).max()),
            "size_bytes": routes[runner.name].stat().st_size,
            "convert_s": seconds.get(runner.name),
        }
    for _ in range(ROUNDS):
        for name, runner in runners.items():
            for _ in range(RUNS):
                t0 = time.perf_counter()
                runner.infer(val[:1])
                samples[name].append((time.perf_counter() - t0) * 1000)
    for name, runner in runners.items():
        rows[name]["p50_ms"] = float(np.median(samples[name]))
        runner.deactivate()
    result = {
        "run": str(run),
        "val_images": int(len(val)),
        "calibration_images": int(len(calibration)),
        "machine": describe_machine(),
        "versions": package_versions("ai-edge-litert", "litert-torch", "ai-edge-quantizer", "torch"),
        "rows": rows,
    }
    write_results(Path(__file__).parent / "results" / "litert_int8", result, render)


def render(result: dict) -> str:
    cpu = result["machine"].get("cpu", "unknown CPU")
    lines = [
        "# LiteRT int8: which conversion route",
        "",
        f"{result['run']}: {result['val_images']} val images, {result['calibration_images']} calibration images; "
        f"{cpu}; 1 thread, batch 1, {ROUNDS} x {RUNS} interleaved runs.",
        "",
        "| route | top-1 | agreement with PyTorch fp32 | max abs logit diff | p50 ms | size MB | convert s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        convert = "-" if row["convert_s"] is None else f"{row['convert_s']:.0f}"
        lines.append(
            f"| {name} | {row['top1']:.1%} | {row['agreement_with_torch_fp32']:.1%} | {row['max_abs_logit_diff']:.3g} "
            f"| {row['p50_ms']:.2f} | {row['size_bytes'] / 1e6:.2f} | {convert} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/android-arm64"))
