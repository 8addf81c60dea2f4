from __future__ import annotations

import pytest

from edgetl.data.check import ImageRecord
from edgetl.data.split import calibration_pool, check_disjoint, stratified_split
from edgetl.errors import DataError


def _records(counts: dict[str, int]) -> list[ImageRecord]:
    return [
        ImageRecord(
            rel=f"{label}/{i}.jpg", label=label, sha256=f"{label}{i}", width=1, height=1, mode="RGB", format="JPEG"
        )
        for label, count in counts.items()
        for i in range(count)
    ]


def test_split_is_stratified_disjoint_and_seeded() -> None:
    records = _records({"a": 20, "b": 10})
    kept, taken = stratified_split(records, 0.2, seed=3)
    assert sorted(r.label for r in taken).count("a") == 4 and sorted(r.label for r in taken).count("b") == 2
    assert not {r.rel for r in kept} & {r.rel for r in taken}
    assert len(kept) + len(taken) == len(records)
    again_kept, again_taken = stratified_split(list(reversed(records)), 0.2, seed=3)
    assert [r.rel for r in again_taken] == [r.rel for r in taken]
    _, other = stratified_split(records, 0.2, seed=4)
    assert [r.rel for r in other] != [r.rel for r in taken]


def test_split_keeps_at_least_one_image_per_class() -> None:
    kept, taken = stratified_split(_records({"a": 2, "b": 1}), 0.5, seed=0)
    assert {r.label for r in kept} == {"a", "b"}
    assert [r.label for r in taken] == ["a"]


def test_zero_fraction_takes_nothing() -> None:
    kept, taken = stratified_split(_records({"a": 5}), 0.0, seed=0)
    assert not taken and len(kept) == 5


def test_calibration_pool_interleaves_classes() -> None:
    pool = calibration_pool(_records({"a": 5, "b": 5, "c": 2}), seed=0)
    assert len(pool) == 12
    assert {r.label for r in pool[:3]} == {"a", "b", "c"}


def test_check_disjoint_raises_on_overlap() -> None:
    check_disjoint({"x": ["1", "2"], "y": ["3"]}, [("x", "y")])
    with pytest.raises(DataError, match="x and y share 1 image"):
        check_disjoint({"x": ["1", "2"], "y": ["2"]}, [("x", "y")])


def test_identical_files_never_straddle_the_split() -> None:
    records = _records({"a": 20, "b": 10})
    copies = [
        ImageRecord(rel=f"a/copy{i}.jpg", label="a", sha256=r.sha256, width=1, height=1, mode="RGB", format="JPEG")
        for i, r in enumerate(records[:20])
    ]
    kept, taken = stratified_split(records + copies, 0.25, seed=0)
    assert not {r.sha256 for r in kept} & {r.sha256 for r in taken}
    assert len(kept) + len(taken) == len(records) + len(copies)
    assert {r.label for r in taken} == {"a", "b"}
