"""Reproduce the quickstart table of issue #3: accuracy, latency and size of every artefact.

    EDGETL_DATA_HOME=../shared/datasets python benchmarks/quickstart.py [--run-dir runs/quickstart]

Builds `profiles/quickstart.yaml` (stages already up to date are skipped), then measures the
artefacts again in this one process with more iterations than the build does (1 thread,
batch 1, interleaved rounds), plus the fp32 model exported with the legacy TorchScript exporter
for comparison. Ratios are taken within this single run; absolute milliseconds depend on the
machine. Writes `benchmarks/results/quickstart.json` and `.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import write_results  # noqa: E402
from edgetl.backbones.checkpoint import load_checkpoint  # noqa: E402
from edgetl.backends.onnxruntime.runner import OnnxRuntimeRunner  # noqa: E402
from edgetl.backends.pytorch.runner import TorchRunner  # noqa: E402
from edgetl.console import Log  # noqa: E402
from edgetl.machine import describe_machine, package_versions  # noqa: E402
from edgetl.measure.latency import measure_latency  # noqa: E402
from edgetl.pipeline import build  # noqa: E402
from edgetl.preprocessing import read_preprocessing  # noqa: E402


def legacy_export(model, path: Path) -> None:
    """The TorchScript exporter (dynamo=False): what most tutorials still use."""
    import torch

    with contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 224, 224),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "quickstart")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "quickstart")
    args = parser.parse_args()

    outcome = build(REPO / "profiles" / "quickstart.yaml", output_dir=args.run_dir, log=Log(quiet=True))
    run = outcome.run_dir
    report = outcome.report
    pre = read_preprocessing(run / "preprocessing.json")
    split = json.loads((run / "data/split.json").read_text())
    sample = pre.batch([Path(split["root"]) / split["val"][0][0]])

    checkpoint = load_checkpoint(run / "models/model.pt")
    model = checkpoint.build_model()
    with tempfile.TemporaryDirectory() as work:
        legacy = Path(work) / "legacy.onnx"
        legacy_export(model, legacy)
        runners = [
            TorchRunner(model, "torch_fp32", threads=args.threads),
            OnnxRuntimeRunner(run / "models/model_fp32.onnx", name="onnx_fp32", threads=args.threads),
            OnnxRuntimeRunner(run / "models/model_int8.onnx", name="onnx_int8", threads=args.threads),
            OnnxRuntimeRunner(legacy, name="onnx_fp32_legacy_export", threads=args.threads),
        ]
        latency = measure_latency(runners, sample, warmup=20, iterations=args.iterations, rounds=args.rounds)

    p50 = {name: stats.p50 for name, stats in latency.items()}
    artifacts = report["artifacts"]
    result = {
        "schema": "edgetl.benchmark.quickstart/1",
        "machine": describe_machine(),
        "versions": package_versions("torch", "onnxruntime", "onnx", "timm"),
        "settings": {"threads": args.threads, "batch": 1, "iterations": args.iterations, "rounds": args.rounds},
        "accuracy": {
            name: {
                "correct": a["correct"],
                "total": a["total"],
                "accuracy": a["accuracy"],
                "agreement_with_torch_fp32": a["agreement"],
            }
            for name, a in artifacts.items()
        },
        "size_bytes": {name: a["size_bytes"] for name, a in artifacts.items()},
        "latency_ms": {name: vars(stats) for name, stats in latency.items()},
        "ratios": {
            "int8_speedup_vs_onnx_fp32": p50["onnx_fp32"] / p50["onnx_int8"],
            "int8_speedup_vs_torch_eager": p50["torch_fp32"] / p50["onnx_int8"],
            "onnx_fp32_speedup_vs_torch_eager": p50["torch_fp32"] / p50["onnx_fp32"],
            "dynamo_export_speedup_vs_legacy_export": p50["onnx_fp32_legacy_export"] / p50["onnx_fp32"],
            "int8_size_vs_onnx_fp32": artifacts["onnx_int8"]["size_bytes"] / artifacts["onnx_fp32"]["size_bytes"],
        },
        "build_budgets_passed": report["passed"],
    }
    write_results(args.out, result, render)


def render(result: dict) -> str:
    machine = result["machine"]
    lines = [
        "# Quickstart benchmark (hymenoptera, EfficientNet-Lite0)",
        "",
        f"Machine: {machine['cpu']} ({machine['architecture']}, flags {', '.join(machine['cpu_flags'])}), "
        f"{machine['usable_cpus']} usable CPUs; batch 1, {result['settings']['threads']} thread(s), "
        f"{result['settings']['iterations']} runs per model interleaved in {result['settings']['rounds']} rounds.",
        "",
        "| model | top-1 (val) | agreement with torch fp32 | p50 ms | p90 ms | p99 ms | size MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, stats in result["latency_ms"].items():
        accuracy = result["accuracy"].get(name)
        size = result["size_bytes"].get(name)
        top1 = f"{accuracy['accuracy']:.2%} ({accuracy['correct']}/{accuracy['total']})" if accuracy else "-"
        agreement = f"{accuracy['agreement_with_torch_fp32']:.2%}" if accuracy else "-"
        megabytes = f"{size / 1e6:.2f}" if size else "-"
        timing = f"{stats['p50']:.2f} | {stats['p90']:.2f} | {stats['p99']:.2f}"
        lines.append(f"| {name} | {top1} | {agreement} | {timing} | {megabytes} |")
    lines += ["", "| ratio (p50, same run) | value |", "|---|---|"]
    lines += [f"| {name} | {value:.2f}x |" for name, value in result["ratios"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
