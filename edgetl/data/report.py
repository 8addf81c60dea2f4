"""Check a whole dataset (train and val) before anything is trained on it: `edgetl data check`.

The data stage and the command share this code, so what the command reports is what a build
would do: the same files skipped, the same refusals, the same duplicate and leakage warnings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgetl.data.check import (
    FolderScan,
    ImageRecord,
    Problem,
    duplicate_problems,
    list_class_folders,
    require_trainable,
    scan_folder,
)
from edgetl.data.sources import resolve_named_dataset
from edgetl.errors import DataError

if TYPE_CHECKING:
    from edgetl.profile import DataConfig

# Largest / smallest class above this: say so, and point at `finetune.class_balance`.
IMBALANCE_WARNING_RATIO = 3.0
CHECK_SCHEMA = "edgetl.data-check/1"


def dataset_layout(root: Path, train_dir: str, val_dir: str | None) -> tuple[Path, Path | None]:
    """(train folder, val folder or None). A root without train/ is itself the class-folder root."""
    train = root / train_dir
    if not train.is_dir():
        train = root
    val = root / val_dir if val_dir else None
    if val is not None and (not val.is_dir() or train == root):
        val = None
    return train, val


@dataclass
class DatasetCheck:
    """Everything `edgetl data check` prints; the data stage writes it as `data/check.json`."""

    root: Path
    train: FolderScan
    val: FolderScan | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def skipped(self) -> list[Problem]:
        return [p for p in self.problems if p.action == "skipped"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.action != "skipped"]

    def counts(self) -> dict[str, dict[str, int]]:
        counts = {"train": self.train.counts()}
        if self.val is not None:
            counts["val"] = self.val.counts()
        return counts

    def imbalance(self) -> float:
        """Largest over smallest train class (1.0 = balanced)."""
        sizes = [n for n in self.train.counts().values() if n > 0]
        return max(sizes) / min(sizes) if sizes else 1.0

    def _usable(self) -> list[ImageRecord]:
        return self.train.images + (self.val.images if self.val else [])

    def images_by_format(self) -> dict[str, int]:
        return dict(sorted(Counter(r.format for r in self._usable()).items()))

    def images_by_mode(self) -> dict[str, int]:
        """Colour modes found (RGBA, CMYK, L, I;16 ...): all are converted to RGB by the loader."""
        return dict(sorted(Counter(r.mode for r in self._usable()).items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": CHECK_SCHEMA,
            "root": str(self.root),
            "classes": self.classes,
            "counts": self.counts(),
            "imbalance": round(self.imbalance(), 3),
            "images_by_format": self.images_by_format(),
            "images_by_mode": self.images_by_mode(),
            "problems": [p.to_dict() for p in self.problems],
        }


def locate_dataset(data: DataConfig, profile_path: Path, log=print) -> Path:
    """The folder a profile's `data` section points at: `data.root`, or a named dataset's local copy."""
    if data.source != "folder":
        return resolve_named_dataset(data.source, data.root, log=log)
    assert data.root is not None  # the profile schema requires it for source: folder
    if not data.root.is_dir():
        problem = "not a folder" if data.root.exists() else "folder not found"
        raise DataError(f"{profile_path}: data.root: {problem}: {data.root}")
    return data.root


def check_profile_data(data: DataConfig, root: Path) -> DatasetCheck:
    """`check_dataset` with the profile's layout, extensions and filters, exactly as a build applies them."""
    return check_dataset(
        root,
        train_dir=data.train_dir,
        val_dir=data.val_dir,
        extensions=data.extensions,
        min_size=data.min_image_size,
        skip_placeholders=data.skip_placeholders,
    )


def check_dataset(
    root: Path,
    *,
    train_dir: str = "train",
    val_dir: str | None = "val",
    extensions: Sequence[str],
    min_size: int = 16,
    skip_placeholders: bool = True,
) -> DatasetCheck:
    """Scan train (and val, when there is a val folder); DataError for what cannot be trained on."""
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    train_root, val_root = dataset_layout(root, train_dir, val_dir)
    if not list_class_folders(train_root):
        raise DataError(f"{train_root}: no class folders found", hint="layout: <root>/<class>/<images>")
    train = scan_folder(train_root, extensions, min_size, skip_placeholders, rel_base=root)
    require_trainable(train, "train")
    problems = list(train.problems)
    val = None
    if val_root is not None:
        unknown = [c for c in list_class_folders(val_root) if c not in train.classes]
        if unknown:
            raise DataError(
                f"{val_root}: val class folder(s) {', '.join(unknown)} have no train folder",
                hint=f"train classes: {', '.join(train.classes)}; rename or remove the val folder(s)",
            )
        val = scan_folder(val_root, extensions, min_size, skip_placeholders, classes=train.classes, rel_base=root)
        problems += val.problems
        val_rel = val_root.relative_to(root).as_posix()
        problems += [
            Problem(f"{val_rel}/{c}", "class has no val images: its accuracy cannot be measured", action="warning")
            for c, n in val.counts().items()
            if n == 0
        ]
    check = DatasetCheck(root=root, train=train, val=val, problems=problems)
    check.problems += duplicate_problems({"train": train.images, **({"val": val.images} if val else {})})
    ratio = check.imbalance()
    if ratio > IMBALANCE_WARNING_RATIO:
        counts = train.counts()
        check.problems.append(
            Problem(
                train_root.relative_to(root).as_posix() or ".",
                f"classes are imbalanced: {max(counts, key=counts.__getitem__)} has {ratio:.1f}x the images of "
                f"{min(counts, key=counts.__getitem__)}; consider finetune.class_balance: weighted_loss or sampler",
                action="warning",
            )
        )
    return check


def leakage(check: DatasetCheck) -> list[Problem]:
    return [p for p in check.problems if "leakage" in p.reason]


def render_check(check: DatasetCheck) -> list[str]:
    """Human-readable summary: class counts per split, imbalance, every problem file with its reason."""
    counts = check.counts()
    width = max(len("class"), *(len(c) for c in check.classes))
    lines = [f"{check.root}: {len(check.classes)} classes"]
    header = f"  {'class':<{width}}  " + "  ".join(f"{split:>6}" for split in counts)
    lines.append(header)
    for label in check.classes:
        lines.append(f"  {label:<{width}}  " + "  ".join(f"{counts[s][label]:>6}" for s in counts))
    totals = "  ".join(f"{sum(c.values()):>6}" for c in counts.values())
    lines.append(f"  {'total':<{width}}  {totals}")
    if check.val is None:
        lines.append("  no val folder: a build splits val off train (data.val_fraction)")
    lines.append(f"  imbalance (largest/smallest train class): {check.imbalance():.2f}")
    modes = ", ".join(f"{mode} {n}" for mode, n in check.images_by_mode().items())
    formats = ", ".join(f"{fmt} {n}" for fmt, n in check.images_by_format().items())
    lines.append(f"  usable images by format: {formats}; by colour mode: {modes} (all converted to RGB)")
    if check.problems:
        lines.append(
            f"  {len(check.skipped)} file(s) skipped, {len(check.warnings)} warning(s), "
            f"{len(leakage(check))} train/val leak(s):"
        )
    for problem in check.problems:
        lines.append(f"  {problem.action:<8} {problem.rel}: {problem.reason}")
    if not check.problems:
        lines.append("  no problems found")
    return lines
