"""Issue 16's yardstick: `edgetl tune` for a time budget vs the data-only profile, judged on val afterwards.

    EDGETL_DATA_HOME=../shared/datasets python benchmarks/tune.py --dataset oxford_flowers17_subset \
        [--time-budget 30m] [--trials 40]

1. `edgetl tune` of a profile holding only the data and a `tune` section (the search space below,
   sized for 30 minutes on 2 cores), into `runs/tune-<dataset>`: trials scored on a tune holdout,
   then the pick rebuilt on all of train and evaluated on val once (the run's report).
2. `edgetl build` of the data-only profile (what a new user writes) into `runs/suite-<dataset>`.
3. Both deployed int8 models on val in this one process: top-1 with the paired bootstrap CI of the
   difference and McNemar's exact test, and p50 latency interleaved in rounds (batch 1, 1 thread),
   so the speed ratio is measured in one run.

"Better": more accurate at equal or lower latency, or as accurate (the paired CI
includes 0 or is above it) and >= 1.3x faster. Writes `benchmarks/results/tune_<dataset>.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import write_results  # noqa: E402
from edgetl import stats  # noqa: E402
from edgetl.backends.onnxruntime.runner import OnnxRuntimeRunner  # noqa: E402
from edgetl.console import Log  # noqa: E402
from edgetl.machine import describe_machine, package_versions  # noqa: E402
from edgetl.pipeline import build  # noqa: E402
from edgetl.preprocessing import read_preprocessing  # noqa: E402
from edgetl.tuning import TuneOptions, run_tune  # noqa: E402

# A space a 30-minute search on 2 cores can cover: fine-tunes of up to 9 epochs, inputs 128-224 px.
SEARCH: dict[str, Any] = {
    "backbone": ["efficientnet_lite0", "efficientnet_lite1"],
    "input_size": {"low": 128, "high": 224, "step": 32},
    "strategy": ["feature_extract", "partial", "full"],
    "unfreeze_blocks": {"low": 1, "high": 6},
    "lr": {"low": 3e-4, "high": 3e-3, "log": True},
    "augmentation": ["light", "default", "strong"],
    "epochs": {"low": 3, "high": 9, "step": 3},
    "calibration_method": ["minmax", "percentile"],
}


def deployed(run_dir: Path) -> tuple[Path, dict[str, Any], np.ndarray, np.ndarray]:
    report = json.loads((run_dir / "report.json").read_text())
    name = report["deployed_artifact"]
    entry = report["artifacts"][name]
    return run_dir / entry["file"], report, np.asarray(report["eval"]["labels"]), np.asarray(entry["predictions"])


def interleaved_p50(models: dict[str, tuple[Path, Any, Path]], rounds: int = 10, runs: int = 30) -> dict[str, float]:
    """p50 ms of each model at batch 1, 1 thread, on one val image each, interleaved in rounds."""
    runners, inputs = {}, {}
    for name, (path, pre, image) in models.items():
        runners[name] = OnnxRuntimeRunner(path, threads=1)
        runners[name].activate()
        inputs[name] = pre.load(image)[None]
        for _ in range(10):
            runners[name].infer(inputs[name])
    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, runner in runners.items():
            for _ in range(runs):
                started = time.perf_counter()
                runner.infer(inputs[name])
                samples[name].append((time.perf_counter() - started) * 1000)
    for runner in runners.values():
        runner.deactivate()
    return {name: float(np.median(values)) for name, values in samples.items()}


def render(result: dict[str, Any]) -> str:
    t, b = result["tuned"], result["data_only"]
    c = result["comparison"]
    lines = [
        f"# `edgetl tune` vs the data-only profile: {result['dataset']}",
        "",
        f"CPU: {result['machine']['cpu']} ({', '.join(result['machine'].get('cpu_flags', []))}), "
        f"{result['machine']['logical_cpus']} cores; time budget {result['time_budget']}; "
        f"{result['study']['counts']['complete']} trials completed, {result['study']['counts']['pruned']} pruned, "
        f"{result['study']['counts']['fail']} failed in {result['tune_seconds'] / 60:.1f} min.",
        "",
        "| model | settings | val top-1 | p50 ms (interleaved, 1 thread) | size MB |",
        "|---|---|---|---|---|",
        f"| data-only profile | {b['settings']} | {b['accuracy']:.1%} ({b['correct']}/{b['images']}) | "
        f"{b['p50_ms']:.2f} | {b['size_mb']:.2f} |",
        f"| tune pick (trial {t['trial']}) | {t['settings']} | {t['accuracy']:.1%} ({t['correct']}/{t['images']}) | "
        f"{t['p50_ms']:.2f} | {t['size_mb']:.2f} |",
        "",
        f"Tuned minus data-only: {c['difference_points']:+.2f} points, paired 95 % CI "
        f"[{c['low_points']:+.2f}, {c['high_points']:+.2f}]; McNemar exact p = {c['mcnemar_p']}; "
        f"speed-up {c['speedup']:.2f}x. Verdict: **{c['verdict']}**.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--time-budget", default="30m")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument(
        "--reuse-baseline",
        action="store_true",
        help="use runs/suite-<dataset> as it is when it has a report (not rebuilt after a code change)",
    )
    home = os.environ.get("EDGETL_DATA_HOME", "../shared/datasets")
    parser.add_argument("--data-home", type=Path, default=Path(home))
    args = parser.parse_args()
    root = (args.data_home / args.dataset).resolve()
    runs = REPO / "runs"
    work = runs / "profiles"
    work.mkdir(parents=True, exist_ok=True)
    base = {
        "version": 1,
        "name": f"suite-{args.dataset}",
        "output_dir": str(runs / f"suite-{args.dataset}"),
        "data": {"root": str(root)},
    }
    base_path = work / f"suite-{args.dataset}.yaml"
    base_path.write_text(yaml.safe_dump(base, sort_keys=False))
    tuned_profile = {
        **base,
        "name": f"tune-{args.dataset}",
        "output_dir": str(runs / f"tune-{args.dataset}"),
        "tune": {"search": SEARCH, "trials": args.trials, "time_budget": args.time_budget},
    }
    tuned_path = work / f"tune-{args.dataset}.yaml"
    tuned_path.write_text(yaml.safe_dump(tuned_profile, sort_keys=False))

    started = time.perf_counter()
    outcome = run_tune(tuned_path, TuneOptions(resume=True), Log())
    tune_seconds = time.perf_counter() - started
    assert outcome.final is not None, "the tune produced no final build"
    if not (args.reuse_baseline and (runs / f"suite-{args.dataset}" / "report.json").is_file()):
        build(base_path, log=Log())

    rows = {}
    models = {}
    for key, run_dir in (("data_only", runs / f"suite-{args.dataset}"), ("tuned", runs / f"tune-{args.dataset}")):
        model, report, labels, predictions = deployed(run_dir)
        pre = read_preprocessing(run_dir / "preprocessing.json")
        image = (
            Path(json.loads((run_dir / "data" / "split.json").read_text())["root"])
            / json.loads((run_dir / "data" / "split.json").read_text())["val"][0][0]
        )
        models[key] = (model, pre, image)
        training = report["training"]
        rows[key] = {
            "run_dir": str(run_dir),
            "artifact": report["deployed_artifact"],
            "settings": f"{training['backbone']} {pre.crop} px, {training['strategy']}, "
            f"{training['epochs_run']} epochs",
            "correct_vector": (labels == predictions).tolist(),
            "correct": int((labels == predictions).sum()),
            "images": len(labels),
            "accuracy": float((labels == predictions).mean()),
            "size_mb": model.stat().st_size / 1e6,
        }
    latency = interleaved_p50(models)
    for key in rows:
        rows[key]["p50_ms"] = latency[key]
    a, b = np.asarray(rows["data_only"]["correct_vector"]), np.asarray(rows["tuned"]["correct_vector"])
    diff = stats.paired_bootstrap_difference(a, b)
    mcnemar = stats.mcnemar_exact(a, b)
    speedup = rows["data_only"]["p50_ms"] / rows["tuned"]["p50_ms"]
    as_accurate = diff["low_points"] <= 0 <= diff["high_points"] or diff["low_points"] > 0
    if diff["low_points"] > 0 and speedup >= 1.0:
        verdict = "more accurate at equal or lower latency"
    elif as_accurate and speedup >= 1.3:
        verdict = "as accurate (paired CI includes 0) and >= 1.3x faster"
    else:
        verdict = "not better (neither more accurate at equal latency nor as accurate and >= 1.3x faster)"
    pick = outcome.summary["pick"]
    rows["tuned"]["trial"] = pick["trial"]
    result = {
        "dataset": args.dataset,
        "machine": describe_machine(),
        "packages": package_versions("torch", "onnxruntime", "optuna"),
        "time_budget": args.time_budget,
        "baseline_reused": bool(args.reuse_baseline),
        "tune_seconds": tune_seconds,
        "study": {"counts": outcome.summary["counts"], "pick": pick, "front": outcome.summary["front"]},
        "data_only": rows["data_only"],
        "tuned": rows["tuned"],
        "comparison": {**diff, "mcnemar_p": mcnemar.get("p_value"), "speedup": speedup, "verdict": verdict},
    }
    write_results(REPO / "benchmarks" / "results" / f"tune_{args.dataset}", result, render)


if __name__ == "__main__":
    main()
