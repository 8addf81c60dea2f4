"""Seeded, stratified splits and the calibration pool.

Rules that keep the reported numbers honest:
* `val` is only ever evaluated on: not trained on, not used for early stopping, not calibrated on.
* Early stopping watches a `holdout` carved out of train.
* Calibration images are drawn from train (+ holdout), never from val; `check_disjoint` enforces it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetl.data.check import ImageRecord
from edgetl.errors import DataError
from edgetl.files import read_json, write_json_atomic


def stratified_split(
    records: list[ImageRecord], fraction: float, seed: int, keep_min: int = 1
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Move round(fraction * n) images of each class to the second list, keeping >= keep_min.

    A file whose bytes also occur on the kept side stays there, so duplicates never straddle the split.
    """
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.rel):
        by_class[record.label].append(record)
    rng = random.Random(seed)
    kept: list[ImageRecord] = []
    taken: list[ImageRecord] = []
    for label in sorted(by_class):
        items = by_class[label]
        rng.shuffle(items)
        count = round(fraction * len(items)) if fraction > 0 else 0
        if fraction > 0 and count == 0 and len(items) > keep_min:
            count = 1
        count = max(0, min(count, len(items) - keep_min))
        taken.extend(items[:count])
        kept.extend(items[count:])
    # Identical files stay on the kept side: a copy on each side would be train/val leakage.
    kept_hashes = {r.sha256 for r in kept}
    kept += [r for r in taken if r.sha256 in kept_hashes]
    taken = [r for r in taken if r.sha256 not in kept_hashes]
    return sorted(kept, key=lambda r: r.rel), sorted(taken, key=lambda r: r.rel)


def calibration_pool(records: list[ImageRecord], seed: int) -> list[ImageRecord]:
    """All non-val images in a seeded order that interleaves classes, so any prefix is balanced."""
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r.rel):
        by_class[record.label].append(record)
    rng = random.Random(seed + 1)
    for items in by_class.values():
        rng.shuffle(items)
    pool: list[ImageRecord] = []
    queues = [by_class[label] for label in sorted(by_class)]
    while any(queues):
        for queue in queues:
            if queue:
                pool.append(queue.pop())
    return pool


def check_disjoint(named: dict[str, list[str]], must_not_meet: list[tuple[str, str]]) -> None:
    """Raise if two lists of relative paths that must not overlap share an image."""
    for first, second in must_not_meet:
        shared = set(named[first]) & set(named[second])
        if shared:
            example = sorted(shared)[0]
            raise DataError(f"internal split error: {first} and {second} share {len(shared)} image(s), e.g. {example}")


SPLIT_SCHEMA = "edgetl.split/1"
SPLIT_SUBSETS = ("train", "holdout", "val", "calibration_pool")


@dataclass(frozen=True)
class Split:
    """split.json: the image files of each subset, relative to `root`, with their class indices.

    Written once by the data stage and read by every later stage, `edgetl bench` and the benchmarks;
    this class is the only code that knows the file's layout.
    """

    root: Path
    classes: list[str]
    val_source: str  # where val came from: the dataset's own val folder, a split of train, a tune holdout
    subsets: dict[str, list[tuple[str, int]]]

    def paths(self, subset: str) -> tuple[list[Path], list[int]]:
        """The subset's image paths and class indices, in the file's (class-sorted) order."""
        entries = self.subsets[subset]
        return [self.root / rel for rel, _ in entries], [label for _, label in entries]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SPLIT_SCHEMA,
            "root": str(self.root),
            "classes": list(self.classes),
            "val_source": self.val_source,
            **{name: [[rel, label] for rel, label in entries] for name, entries in self.subsets.items()},
        }


def read_split(path: Path) -> Split:
    data = read_json(path)
    if not isinstance(data, dict) or data.get("schema") != SPLIT_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: unsupported split file schema {found!r}")
    try:
        return Split(
            root=Path(data["root"]),
            classes=[str(name) for name in data["classes"]],
            val_source=str(data.get("val_source", "")),
            subsets={
                name: [(str(rel), int(label)) for rel, label in data[name]] for name in SPLIT_SUBSETS if name in data
            },
        )
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: damaged split file ({error}); rebuild with --force") from None


def write_split(path: Path, split: Split) -> None:
    write_json_atomic(path, split.to_dict())
