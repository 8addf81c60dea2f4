"""Small file helpers: atomic writes, hashing, canonical JSON.

Every artefact is written under a temporary name and renamed into place, so a crash or Ctrl-C
never leaves a half-written file under a name that a later stage or a user trusts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(data: Any) -> str:
    """Stable serialization used for fingerprints: sorted keys, no whitespace variance."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_name(target)
    try:
        yield temp
        os.replace(temp, target)
    finally:
        if temp.exists():
            temp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def publish_file(source: Path, target: Path) -> None:
    """Place `source` at `target` atomically, by hard link when possible (no copy of big models)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_name(target)
    if temp.exists():
        temp.unlink()
    try:
        os.link(source, temp)
    except OSError:
        shutil.copy2(source, temp)
    os.replace(temp, target)


def owned_path(root: Path, relative: str) -> Path | None:
    """`root / relative` if edgetl may write or delete it there, else None.

    `relative` must be a plain relative POSIX path (no `..`, not absolute, no backslash or NUL), and no
    folder on the way from `root` to it may be a symbolic link: a name read from a manifest or a
    listing never reaches outside `root`. A link as the last part is fine: removing or replacing it
    does not touch what it points to.
    """
    if not isinstance(relative, str) or not relative or "\\" in relative or "\0" in relative:
        return None
    pure = PurePosixPath(relative)
    if pure.is_absolute() or any(part in ("..", ".", "") for part in relative.split("/")):
        return None
    folder = root
    for part in pure.parts[:-1]:
        folder = folder / part
        if folder.is_symlink():
            return None
    return root / pure


def nearest_existing(path: Path) -> Path:
    """`path` if it exists, else its nearest existing ancestor: where a write to `path` would have to start."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


@contextlib.contextmanager
def folders_kept_on_success(path: Path) -> Iterator[None]:
    """Create `path` (and missing parents); if the block fails, remove what was created and is still empty.

    A command refused after making its output folder (an unreachable database, say) leaves nothing behind.
    """
    created = [folder for folder in (path, *path.parents) if not folder.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in created:  # deepest first; stops at the first one something was written into
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def first_symlinked_folder(root: Path) -> Path | None:
    """The first folder under `root` that is a symbolic link (not followed), or None."""
    for folder, subfolders, _ in os.walk(root, followlinks=False):
        for name in sorted(subfolders):
            if os.path.islink(os.path.join(folder, name)):
                return Path(folder) / name
    return None


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
