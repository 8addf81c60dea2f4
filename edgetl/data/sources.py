"""Named dataset sources: find a local copy first, download (verified) only as a last resort.

`hymenoptera` (the ants/bees set of the PyTorch transfer-learning tutorial) resolves from:
  1. the profile's `data.root`,
  2. `$EDGETL_DATA_HOME/hymenoptera` (or `hymenoptera_data`),
  3. the user cache (`~/.cache/edgetl/datasets/hymenoptera`),
  4. a download of the official archive, unless `EDGETL_OFFLINE=1`.
The archive's own checksum is not published, so a download is verified by a digest of every
extracted train/val file (path + SHA-256), taken from the reference copy; it is moved into the
cache only when that digest matches.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgetl.errors import DataError, DownloadError
from edgetl.paths import cache_dir, data_home, offline


@dataclass(frozen=True)
class NamedDataset:
    name: str
    url: str
    archive_folder: str  # top-level folder inside the archive
    splits: tuple[str, ...]
    tree_sha256: str  # digest of "relpath\tsha256" lines of every file under `splits`
    file_count: int


HYMENOPTERA = NamedDataset(
    name="hymenoptera",
    url="https://download.pytorch.org/tutorial/hymenoptera_data.zip",
    archive_folder="hymenoptera_data",
    splits=("train", "val"),
    tree_sha256="de482aeb9aa7e451514763b89460f2f6de607558d0b3b6c7490a6ae5b243ce8d",
    file_count=398,
)

DATASETS = {HYMENOPTERA.name: HYMENOPTERA}


def tree_digest(root: Path, splits: tuple[str, ...]) -> tuple[str, int]:
    """Digest of (relative path, content hash) for every file under root/<split>."""
    lines = []
    for split in splits:
        for path in sorted((root / split).rglob("*")):
            if path.is_file():
                content = hashlib.sha256(path.read_bytes()).hexdigest()
                lines.append(f"{path.relative_to(root).as_posix()}\t{content}")
    lines.sort()
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest(), len(lines)


def _looks_like(root: Path, dataset: NamedDataset) -> bool:
    return all((root / split).is_dir() for split in dataset.splits)


def resolve_named_dataset(name: str, root: Path | None, log=print) -> Path:
    """Return a local folder holding `name`, downloading it only when no copy exists."""
    dataset = DATASETS[name]
    if root is not None:
        if not _looks_like(root, dataset):
            raise DataError(
                f"data.root: {root} does not contain {'/ and '.join(dataset.splits)}/ folders of the {name} dataset"
            )
        return root
    candidates = []
    home = data_home()
    if home is not None:
        candidates += [home / name, home / dataset.archive_folder]
    cached = cache_dir() / "datasets" / name
    candidates.append(cached)
    for candidate in candidates:
        if _looks_like(candidate, dataset):
            return candidate
    if offline():
        raise DownloadError(
            f"dataset {name!r} not found locally and EDGETL_OFFLINE is set",
            hint=f"set EDGETL_DATA_HOME to a folder containing {name}/, or data.root in the profile",
        )
    log(f"dataset {name!r} not found locally; downloading {dataset.url}")
    return download_named_dataset(dataset, cached)


def download_named_dataset(dataset: NamedDataset, destination: Path) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=f".{dataset.name}-") as work:
        work_dir = Path(work)
        archive = work_dir / "archive.zip"
        _download(dataset.url, archive)
        extracted = work_dir / "extracted"
        safe_extract_zip(archive, extracted)
        root = extracted / dataset.archive_folder
        if not _looks_like(root, dataset):
            raise DownloadError(f"{dataset.url}: archive does not contain {dataset.archive_folder}/train and /val")
        digest, count = tree_digest(root, dataset.splits)
        if digest != dataset.tree_sha256 or count != dataset.file_count:
            raise DownloadError(
                f"{dataset.url}: downloaded files do not match the reference ({count} files, digest {digest[:12]}...)",
                hint="the download was corrupted or the archive changed upstream; nothing was cached",
            )
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(root, destination)
    return destination


def _download(url: str, target: Path, timeout: float = 30.0) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:  # noqa: S310
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if total and sys.stderr.isatty():
                    print(f"\r  {done / 1e6:.1f} / {total / 1e6:.1f} MB", end="", file=sys.stderr)
        if total and sys.stderr.isatty():
            print(file=sys.stderr)
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"cannot download {url}: {reason}",
            hint="no network? set EDGETL_DATA_HOME to a local copy, or data.root in the profile",
        ) from None


def safe_extract_zip(archive: Path, target: Path) -> None:
    """Extract a zip, refusing members that would land outside `target` (zip-slip) or are links."""
    target.mkdir(parents=True, exist_ok=True)
    base = target.resolve()
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                destination = (base / member.filename).resolve()
                if destination != base and base not in destination.parents:
                    raise DownloadError(f"{archive}: member {member.filename!r} escapes the extraction folder")
                is_link = (member.external_attr >> 16) & 0o170000 == 0o120000
                if is_link:
                    raise DownloadError(f"{archive}: member {member.filename!r} is a symbolic link")
            bundle.extractall(base)
    except zipfile.BadZipFile as error:
        raise DownloadError(f"{archive}: not a valid zip archive ({error})") from None
