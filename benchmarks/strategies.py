"""Fine-tuning strategies x backbones on hymenoptera: val accuracy, trainable parameters, wall time.

    EDGETL_DATA_HOME=../shared/datasets python benchmarks/strategies.py [--only efficientnet_lite0]

Each cell runs `edgetl train` (data + finetune stages) with the quickstart profile and one
strategy, then evaluates the best checkpoint on the 153 val images (never used for training or
early stopping). Wall time is the fine-tune stage's own, end to end (model build, feature
caching, every epoch, checkpoint). Backbones whose weights are not available offline are listed
as skipped. Writes `benchmarks/results/strategies.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import write_results  # noqa: E402
from edgetl.backbones import get_backbone  # noqa: E402
from edgetl.backbones.checkpoint import load_checkpoint  # noqa: E402
from edgetl.backends.pytorch.runner import TorchRunner  # noqa: E402
from edgetl.console import Log  # noqa: E402
from edgetl.data.split import read_split  # noqa: E402
from edgetl.errors import BackboneError  # noqa: E402
from edgetl.machine import describe_machine  # noqa: E402
from edgetl.pipeline import build  # noqa: E402

# The cached / uncached pair trains the same 10 epochs (no early stopping) so only the caching differs.
NO_AUGMENTATION = {"augmentation": {"enabled": False}, "epochs": 10, "early_stopping": {"patience": None}}
LONGER = {"epochs": 10, "early_stopping": {"patience": 3}}
# name -> finetune overrides on top of profiles/quickstart.yaml
CELLS: dict[str, dict] = {
    "feature_extract": {},
    "feature_extract (no aug, cached features)": {**NO_AUGMENTATION, "cache_features": True},
    "feature_extract (no aug, backbone every epoch)": {**NO_AUGMENTATION, "cache_features": False},
    "partial (top 3 blocks)": {"strategy": "partial", "unfreeze_blocks": 3, **LONGER},
    "gradual (2 blocks / 2 epochs)": {"strategy": "gradual", **LONGER},
    "full": {"strategy": "full", **LONGER},
    "scratch": {"strategy": "scratch", "lr": 0.003, "epochs": 15, "early_stopping": {"patience": 5}},
    "auto": {"strategy": "auto"},
}
PLAN: dict[str, list[str]] = {
    "efficientnet_lite0": list(CELLS),
    "efficientnet_lite1": ["feature_extract", "feature_extract (no aug, cached features)"],
    "efficientnet_lite2": ["feature_extract", "feature_extract (no aug, cached features)"],
    "mobilenet_v3_large": ["feature_extract"],
    "resnet18": ["feature_extract"],
}


def evaluate(run: Path) -> tuple[int, int]:
    checkpoint = load_checkpoint(run / "models/model.pt")
    split = read_split(run / "data/split.json")
    paths, labels = split.paths("val")
    runner = TorchRunner(checkpoint.build_model(), threads=None)
    runner.activate()
    correct = 0
    for start in range(0, len(paths), 32):
        logits = runner.infer(checkpoint.preprocessing.batch(paths[start : start + 32]))
        correct += int((logits.argmax(1) == np.asarray(labels[start : start + 32])).sum())
    return correct, len(paths)


def run_cell(backbone: str, cell: str, work: Path) -> dict:
    profile = yaml.safe_load((REPO / "profiles/quickstart.yaml").read_text())
    slug = re.sub(r"[^a-z0-9]+", "-", cell.split(" (")[0] + ("-" + cell.split(" (")[1][:12] if " (" in cell else ""))
    profile["name"] = f"{backbone}-{slug.strip('-')}"[:64]
    profile["backbone"] = {"name": backbone}
    profile["finetune"] = {**profile["finetune"], **CELLS[cell]}
    profile["output_dir"] = str(work / profile["name"])
    path = work / f"{profile['name']}.yaml"
    path.write_text(yaml.safe_dump(profile))
    started = time.perf_counter()
    outcome = build(path, until="finetune", force=True, log=Log(quiet=True))
    wall = time.perf_counter() - started
    summary = outcome.results["finetune"].summary
    correct, total = evaluate(outcome.run_dir)
    return {
        "backbone": backbone,
        "strategy": cell,
        "chosen": summary.strategy if summary.auto else None,
        "val_correct": correct,
        "val_total": total,
        "val_accuracy": correct / total,
        "trainable_parameters": summary.trainable_parameters,
        "total_parameters": summary.total_parameters,
        "epochs_run": summary.epochs_run,
        "best_epoch": summary.best_epoch,
        "finetune_stage_seconds": outcome.results["finetune"].seconds,
        "build_seconds": wall,
        "head_init": summary.head_init["mode"],
        "auto": summary.auto,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="backbones to run (default: the whole plan)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-strategies")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "strategies")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    for backbone, cells in PLAN.items():
        if args.only and backbone not in args.only:
            continue
        try:
            get_backbone(backbone).build(num_classes=2)
        except BackboneError as error:
            skipped.append({"backbone": backbone, "reason": str(error)})
            print(f"skip {backbone}: {error}", flush=True)
            continue
        for cell in cells:
            row = run_cell(backbone, cell, args.work)
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("backbone", "strategy", "val_accuracy", "finetune_stage_seconds")}),
                  flush=True)  # fmt: skip
    result = {"machine": describe_machine(), "rows": rows, "skipped": skipped}
    cached = next((r for r in rows if r["backbone"] == "efficientnet_lite0" and "cached" in r["strategy"]), None)
    uncached = next((r for r in rows if r["backbone"] == "efficientnet_lite0" and "every epoch" in r["strategy"]), None)
    if cached and uncached:
        result["cached_features_speedup"] = uncached["finetune_stage_seconds"] / cached["finetune_stage_seconds"]
        result["cached_vs_uncached_val_correct"] = [cached["val_correct"], uncached["val_correct"]]
    write_results(args.out, result, render)


def render(result: dict) -> str:
    machine = result["machine"]
    lines = [
        "# Fine-tuning strategies on hymenoptera (val: 153 images)",
        "",
        f"Machine: {machine['cpu']}, {machine['usable_cpus']} CPUs. Profile: profiles/quickstart.yaml with the",
        "strategy overrides in benchmarks/strategies.py. Wall time is the fine-tune stage end to end.",
        "",
        "| backbone | strategy | val top-1 | trainable params | epochs (best) | fine-tune wall s |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        chosen = f" -> {r['chosen']}" if r["chosen"] else ""
        accuracy = f"{r['val_accuracy']:.2%} ({r['val_correct']}/{r['val_total']})"
        epochs = f"{r['epochs_run']} ({r['best_epoch']})"
        lines.append(
            f"| {r['backbone']} | {r['strategy']}{chosen} | {accuracy} | {r['trainable_parameters']:,} | {epochs} "
            f"| {r['finetune_stage_seconds']:.1f} |"
        )
    if "cached_features_speedup" in result:
        lines += [
            "",
            f"Cached features vs running the frozen backbone every epoch (no augmentation, 10 epochs each): "
            f"**{result['cached_features_speedup']:.1f}x faster** end to end, val correct "
            f"{result['cached_vs_uncached_val_correct'][0]} vs {result['cached_vs_uncached_val_correct'][1]}.",
        ]
    for skip in result["skipped"]:
        lines.append(f"\nSkipped {skip['backbone']}: {skip['reason']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
