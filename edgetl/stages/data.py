"""Data stage: find the images, check every file, split train / holdout / val, pick calibration.

Outputs: `labels.txt`, `data/split.json` (every image by split, plus the calibration pool) and
`data/check.json` (every problem file with its reason, class counts).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from edgetl import layout
from edgetl.data.check import ImageRecord, Problem
from edgetl.data.report import check_profile_data, dataset_layout, locate_dataset
from edgetl.data.split import Split, calibration_pool, check_disjoint, stratified_split, write_split
from edgetl.errors import DataError
from edgetl.files import write_json_atomic, write_text_atomic
from edgetl.machine import package_versions
from edgetl.profile import profile_section
from edgetl.stages.base import BuildContext, Stage
from edgetl.summaries import DataSummary

_SHOWN_PROBLEMS = 20


def dataset_root(ctx: BuildContext) -> Path:
    if "dataset_root" not in ctx.scratch:
        ctx.scratch["dataset_root"] = locate_dataset(ctx.profile.data, ctx.loaded.path, log=ctx.log)
    return ctx.scratch["dataset_root"]


def _listing_digest(folders: list[Path]) -> str:
    """Cheap fingerprint of a dataset: every file's path, size and modification time."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class DataStage(Stage):
    name = "data"
    summary_type = DataSummary

    def fingerprint_inputs(self, ctx: BuildContext) -> dict[str, Any]:
        data = ctx.profile.data
        root = dataset_root(ctx)
        train, val = dataset_layout(root, data.train_dir, data.val_dir)
        return {
            "config": profile_section(ctx.profile, "data"),
            "seed": ctx.profile.seed,
            "root": str(root),
            "listing": _listing_digest([train] + ([val] if val else [])),
            "versions": package_versions("pillow"),  # decides which files decode
        }

    def run(self, ctx: BuildContext, out: Path) -> DataSummary:
        data = ctx.profile.data
        seed = ctx.profile.seed
        root = dataset_root(ctx)

        ctx.log.stage(self.name, f"checking images in {root}")
        check = check_profile_data(data, root)
        classes = check.classes
        problems: list[Problem] = list(check.problems)
        if check.val is not None:
            train_records, val_records = check.train.images, check.val.images
            val_source = "folder"
        else:
            train_records, val_records = stratified_split(check.train.images, data.val_fraction, seed)
            val_source = f"split ({data.val_fraction:.0%} of each class, seed {seed})"

        if data.tune_holdout is not None:  # a tuning trial: val stays unseen, a share of train is scored instead
            draw = seed + 31 + 1000 * data.tune_fold
            train_records, val_records = stratified_split(train_records, data.tune_holdout, draw)
            val_source = (
                f"tune holdout ({data.tune_holdout:.0%} of each train class, seed {seed}, fold {data.tune_fold}; "
                "val not used)"
            )
        fit_records, holdout_records = stratified_split(train_records, data.holdout_fraction, seed + 17)
        # Refused here, in seconds, instead of failing in the benchmark after the whole training.
        if not val_records:
            raise DataError(
                f"{root}: no images left for val ({val_source}): every class has too few images to split one off",
                hint="add a val/ folder or more images per class",
            )
        if not holdout_records and data.holdout_fraction > 0:
            raise DataError(
                f"{root}: no images left for the holdout (data.holdout_fraction {data.holdout_fraction:g} of "
                f"{len(train_records)} training images): every class has too few images",
                hint="add images per class, or set data.holdout_fraction: 0 (no early stopping, no auto comparison)",
            )
        pool = calibration_pool(train_records, seed)
        splits = {"train": fit_records, "holdout": holdout_records, "val": val_records, "calibration_pool": pool}
        names = {key: [r.rel for r in value] for key, value in splits.items()}
        check_disjoint(names, [("train", "val"), ("holdout", "val"), ("calibration_pool", "val"), ("train", "holdout")])

        index = {label: i for i, label in enumerate(classes)}
        write_text_atomic(out / layout.LABELS, "\n".join(classes) + "\n")
        subsets = {key: [(r.rel, index[r.label]) for r in value] for key, value in splits.items()}
        write_split(out / layout.SPLIT, Split(root=root, classes=classes, val_source=val_source, subsets=subsets))
        counts = {key: _class_counts(value, classes) for key, value in splits.items() if key != "calibration_pool"}
        write_json_atomic(
            out / layout.DATA_CHECK,
            {**check.to_dict(), "counts": counts, "problems": [p.to_dict() for p in problems]},
        )
        skipped = [p for p in problems if p.action == "skipped"]
        for problem in problems[:_SHOWN_PROBLEMS]:
            ctx.log.warn(f"{problem.rel}: {problem.reason}" + (" (skipped)" if problem.action == "skipped" else ""))
        if len(problems) > _SHOWN_PROBLEMS:
            ctx.log.warn(f"... and {len(problems) - _SHOWN_PROBLEMS} more, listed in {layout.DATA_CHECK}")
        ctx.log.stage(
            self.name,
            f"{len(classes)} classes; train {len(fit_records)}, holdout {len(holdout_records)}, "
            f"val {len(val_records)} ({val_source}); {len(skipped)} file(s) skipped",
        )
        return DataSummary(
            root=str(root),
            classes=classes,
            counts={key: sum(v.values()) for key, v in counts.items()},
            val_source=val_source,
            skipped_files=len(skipped),
            warnings=len(problems) - len(skipped),
            imbalance=round(check.imbalance(), 3),
        )


def _class_counts(records: list[ImageRecord], classes: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    for record in records:
        counts[record.label] += 1
    return counts
