"""Seeded, stratified splits and the calibration pool.

Rules that keep the reported numbers honest:
* `val` is only ever evaluated on: not trained on, not used for early stopping, not calibrated on.
* Early stopping watches a `holdout` carved out of train.
* Calibration images are drawn from train (+ holdout), never from val; `check_disjoint` enforces it.
"""

from __future__ import annotations

import random
from collections import defaultdict

from edgetl.data.check import ImageRecord
from edgetl.errors import DataError


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
