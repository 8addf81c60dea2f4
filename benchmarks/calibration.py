"""Calibration methods and the accuracy-aware fallback, measured on a real build (issue #5).

    EDGETL_DATA_HOME=../shared/datasets python benchmarks/calibration.py [--profile profiles/quickstart.yaml]

Builds the profile once, then re-runs only the optimize and benchmark stages (the stage cache
keeps data, fine-tuning and export) for each int8 variant: the profile's own settings with and
without the fallback, MinMax, Percentile, Entropy, 7-bit weights, and two
deliberately bad settings (per-tensor weights with nothing kept in float, and 2 calibration
images) with the fallback off and on. For each: val accuracy with its 95% CI, agreement with
fp32, exact McNemar p, the drop on the tuning images, what the fallback kept in float and the
int8/ORT-fp32 latency ratio measured in the same run. Writes `benchmarks/results/calibration_<name>.json`
and `.md`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import write_results  # noqa: E402
from edgetl.console import Log  # noqa: E402
from edgetl.machine import describe_machine, package_versions  # noqa: E402
from edgetl.pipeline import build  # noqa: E402
from edgetl.profile import deep_merge  # noqa: E402

_NO_FALLBACK = {"accuracy_aware": {"enabled": False}}
_BAD_WEIGHTS = {"per_channel": False, "reduce_range": False, "keep_float": []}
VARIANTS: dict[str, dict] = {
    "profile": {},
    "profile, no fallback": _NO_FALLBACK,
    "minmax": {"calibration_method": "minmax"},
    "percentile": {"calibration_method": "percentile"},
    "entropy": {"calibration_method": "entropy"},
    "per-tensor weights, no fallback": {**_BAD_WEIGHTS, **_NO_FALLBACK},
    "per-tensor weights, fallback": _BAD_WEIGHTS,
    "2 calibration images, no fallback": {"calibration_images": 2, **_NO_FALLBACK},
    "2 calibration images, fallback": {"calibration_images": 2},
    "7-bit weights, no fallback": {"reduce_range": True, **_NO_FALLBACK},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, default=REPO / "profiles" / "quickstart.yaml")
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    args = parser.parse_args()
    base = yaml.safe_load(args.profile.read_text())
    name = base["name"]
    run_dir = args.run_dir or REPO / "runs" / f"calibration-{name}"
    rows = []
    for variant, settings in VARIANTS.items():
        if args.only and variant not in args.only:
            continue
        profile = deep_merge(base, {"optimize": {"int8": settings}, "benchmark": {"memory": False}})
        with tempfile.TemporaryDirectory() as work:
            path = Path(work) / f"{name}.yaml"
            # Relative paths in the profile resolve against its folder: keep them pointing at the original.
            for key in ("root",):
                if profile.get("data", {}).get(key):
                    profile["data"][key] = str((args.profile.parent / profile["data"][key]).resolve())
            path.write_text(yaml.safe_dump(profile, sort_keys=False))
            started = time.perf_counter()
            outcome = build(path, output_dir=run_dir, log=Log(quiet=True))
            seconds = time.perf_counter() - started
        report = outcome.report
        int8, fp32 = report["artifacts"]["onnx_int8"], report["artifacts"]["onnx_fp32"]
        quant = report["quantization"]
        aware = quant.get("accuracy_aware") or {}
        rows.append(
            {
                "variant": variant,
                "settings": settings,
                "val_correct": int8["correct"],
                "val_total": int8["total"],
                "val_accuracy": int8["accuracy"],
                "val_accuracy_ci": [int8["statistics"]["accuracy"]["low"], int8["statistics"]["accuracy"]["high"]],
                "fp32_correct": report["artifacts"]["torch_fp32"]["correct"],
                "agreement": int8["agreement"],
                "mcnemar_p": int8["statistics"]["mcnemar"]["p_value"],
                "tuning_drop_points": quant["tuning"]["accuracy_drop_points"],
                "fallback_triggered": aware.get("triggered", False),
                "fallback_initial_drop_points": aware.get("initial_drop_points"),
                "float_nodes_added": aware.get("added_float_nodes", []),
                "fallback_cost": aware.get("cost"),
                "calibration": quant.get("calibration"),
                "int8_speedup_vs_onnx_fp32": fp32["latency_ms"]["p50"] / int8["latency_ms"]["p50"],
                "optimize_seconds": outcome.results["optimize"].seconds,
                "build_seconds": seconds,
            }
        )
        print(f"{variant}: {int8['correct']}/{int8['total']}, tuning drop {rows[-1]['tuning_drop_points']:.2f}")
    result = {
        "schema": "edgetl.benchmark.calibration/1",
        "profile": name,
        "machine": describe_machine(),
        "versions": package_versions("onnxruntime", "onnx", "torch"),
        "rows": rows,
    }
    write_results(REPO / "benchmarks" / "results" / f"calibration_{name}", result, render)


def render(result: dict) -> str:
    lines = [
        f"# int8 calibration and accuracy-aware fallback: {result['profile']}",
        "",
        f"{result['machine']['cpu']}, {result['machine']['usable_cpus']} CPUs; onnxruntime "
        f"{result['versions']['onnxruntime']}. Accuracy on val (never used for calibration or tuning); "
        "tuning drop on train + holdout images; speedup = ORT fp32 p50 / int8 p50, batch 1, 1 thread, same run.",
        "",
        "| variant | int8 val (95% CI) | fp32 val | agreement | McNemar p | tuning drop | fallback kept in float "
        "| fallback latency cost | int8 speedup | clipped ranges | optimize s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ci = r["val_accuracy_ci"]
        cost = r["fallback_cost"]
        calibration = r["calibration"] or {}
        slowdown = f"{cost['slowdown']:.2f}x" if cost else "-"
        kept = (
            f"{len(r['float_nodes_added'])} nodes (all-int8 drop {r['fallback_initial_drop_points']:.1f} pts)"
            if r["fallback_triggered"]
            else "-"
        )
        lines.append(
            f"| {r['variant']} | {r['val_correct']}/{r['val_total']} ({ci[0]:.1%}-{ci[1]:.1%}) | "
            f"{r['fp32_correct']}/{r['val_total']} | {r['agreement']:.2%} | {r['mcnemar_p']:.3g} | "
            f"{r['tuning_drop_points']:.2f} | {kept} | {slowdown} | "
            f"{r['int8_speedup_vs_onnx_fp32']:.2f}x | "
            f"{calibration.get('tensors_clipped', 0)}/{calibration.get('tensors', 0)} | {r['optimize_seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
