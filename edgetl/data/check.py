"""Scan an ImageFolder tree and inspect every image, reporting (not failing on) bad files.

A real image folder has corrupt JPEGs, "image not available" placeholders, hidden files and stray
documents. Each becomes a `Problem` with a reason and is skipped; only conditions that make
training impossible (no classes, an empty class) raise a `DataError`.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from edgetl.errors import DataError
from edgetl.preprocessing import TooManyPixels, check_pixel_count, to_rgb

# Pillow refuses absurdly large images by default (decompression bombs); keep that, but say so.
_PLACEHOLDER_MAX_COLOURS = 64
_PLACEHOLDER_MAX_SATURATION = 8.0
_PLACEHOLDER_MIN_BACKGROUND = 0.5  # share of pixels in the most common colour


@dataclass(frozen=True)
class ImageRecord:
    rel: str  # path relative to the dataset root, POSIX separators
    label: str
    sha256: str
    width: int
    height: int
    mode: str
    format: str


@dataclass(frozen=True)
class Problem:
    rel: str
    reason: str
    action: str = "skipped"  # "skipped" | "warning"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class FolderScan:
    root: Path
    classes: list[str]
    images: list[ImageRecord]
    problems: list[Problem]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for record in self.images:
            counts[record.label] += 1
        return counts


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _is_placeholder(image: Image.Image) -> bool:
    """A rendered 'image not found' card, not a photo: colour image, few colours, no saturation, one background.

    Grayscale files (mode L, I;16 ...) are only called placeholders when blank: a grayscale dataset
    (scans, digits) legitimately has few grey levels and a dominant background.
    """
    rgb = to_rgb(image)  # 16-bit scaled like the loader does, not clipped to white
    colours = rgb.getcolors(_PLACEHOLDER_MAX_COLOURS)
    if colours is None:
        return False
    if len(colours) == 1:
        return True
    if image.mode not in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr"):
        return False
    pixels = max(1, rgb.width * rgb.height)
    saturation = sum(count * (max(c) - min(c)) for count, c in colours) / pixels
    background = max(count for count, _ in colours) / pixels
    return saturation < _PLACEHOLDER_MAX_SATURATION and background >= _PLACEHOLDER_MIN_BACKGROUND


def inspect_image(path: Path, min_size: int, skip_placeholders: bool) -> tuple[dict | None, str | None]:
    """Decode `path` fully. Returns (info, None) for a usable image or (None, reason)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, f"cannot read file ({error.strerror})"
    if not data:
        return None, "empty file (0 bytes)"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or "?"
            check_pixel_count(image)
            image.load()
            width, height = image.size
            mode = image.mode
            if width < min_size or height < min_size:
                return None, f"too small ({width}x{height} px, minimum {min_size})"
            if skip_placeholders and _is_placeholder(image):
                return None, "placeholder image (a few grey levels only, e.g. 'image not available')"
    except (Image.DecompressionBombError, TooManyPixels) as error:
        return None, f"refused: {error}"
    except UnidentifiedImageError:
        return None, "not a decodable image"
    except (OSError, SyntaxError, ValueError) as error:
        return None, f"corrupt image ({error})"
    digest = hashlib.sha256(data).hexdigest()
    return {"sha256": digest, "width": width, "height": height, "mode": mode, "format": image_format}, None


def list_class_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for name in names:
        check_class_name(name, root)
    return names


def check_class_name(name: str, root: Path) -> None:
    """A class name must survive labels.txt (one name per line) and every reader: one line, no control characters.

    `str.splitlines` also splits on \\v, \\f, \\x1c-\\x1e, \\x85, U+2028 and U+2029: a folder named `be\\vees`
    would come back from labels.txt as two classes and shift every label after it.
    """
    if name.splitlines() != [name] or any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in name):
        raise DataError(
            f"{root}: class folder {name!r} has a line break or control character in its name; labels.txt holds one "
            "class name per line, so it would not read back as the same class",
            hint="rename the folder",
        )


def scan_folder(
    root: Path,
    extensions: Iterable[str],
    min_size: int = 16,
    skip_placeholders: bool = True,
    classes: list[str] | None = None,
    rel_base: Path | None = None,
) -> FolderScan:
    """Scan root/<class>/**/<image>. `rel_base` is what record paths are relative to."""
    rel_base = rel_base or root
    wanted = {e.lower() for e in extensions}
    found_classes = list_class_folders(root)
    class_list = classes if classes is not None else found_classes
    images: list[ImageRecord] = []
    problems: list[Problem] = []

    def rel(path: Path) -> str:
        return path.relative_to(rel_base).as_posix()

    for path in sorted(root.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            problems.append(Problem(rel(path), "file outside any class folder, ignored"))
        elif path.is_dir() and path.name.startswith("."):
            problems.append(Problem(rel(path), "hidden folder, not a class: ignored", action="warning"))
    for label in found_classes:
        if label not in class_list:
            continue
        for path in sorted((root / label).rglob("*")):
            if path.is_dir():
                continue
            if not path.is_file():  # a FIFO or device would block the scan or never end
                problems.append(Problem(rel(path), "not a regular file, ignored"))
                continue
            if _is_hidden(path, root):
                problems.append(Problem(rel(path), "hidden file, ignored"))
                continue
            if path.suffix.lower() not in wanted:
                problems.append(Problem(rel(path), f"extension {path.suffix or '(none)'!r} is not an image type"))
                continue
            info, reason = inspect_image(path, min_size, skip_placeholders)
            if info is None:
                problems.append(Problem(rel(path), reason or "unusable"))
                continue
            images.append(ImageRecord(rel=rel(path), label=label, **info))
    return FolderScan(root=root, classes=class_list, images=images, problems=problems)


def require_trainable(scan: FolderScan, what: str) -> None:
    """Refuse what cannot be trained on, with one clear message."""
    if len(scan.classes) < 2:
        raise DataError(
            f"{scan.root}: {what} needs at least 2 class folders, found {len(scan.classes)}"
            + (f" ({', '.join(scan.classes)})" if scan.classes else ""),
            hint="layout: <root>/<class name>/<images>",
        )
    empty = [label for label, count in scan.counts().items() if count == 0]
    if empty:
        raise DataError(
            f"{scan.root}: {what} class folder(s) with no usable image: {', '.join(empty)}",
            hint="add images or remove the folder; `edgetl data check` lists why files were skipped",
        )


def duplicate_problems(records: dict[str, list[ImageRecord]]) -> list[Problem]:
    """Warn about identical files across splits (leakage) or across classes (label noise)."""
    seen: dict[str, tuple[str, ImageRecord]] = {}
    problems: list[Problem] = []
    for split, items in records.items():
        for record in items:
            if record.sha256 in seen:
                other_split, other = seen[record.sha256]
                if other_split != split:
                    reason = f"identical to {other.rel} in {other_split} (train/val leakage)"
                elif other.label != record.label:
                    reason = f"identical to {other.rel} but labelled {other.label!r}"
                else:
                    reason = f"duplicate of {other.rel}"
                problems.append(Problem(record.rel, reason, action="warning"))
            else:
                seen[record.sha256] = (split, record)
    return problems
