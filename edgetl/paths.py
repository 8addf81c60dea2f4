"""Where edgetl keeps things outside a run directory (user cache, data home)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$EDGETL_CACHE_DIR`, else `$XDG_CACHE_HOME/edgetl`, else `~/.cache/edgetl`."""
    explicit = os.environ.get("EDGETL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser().absolute() if xdg else Path.home() / ".cache"
    return base / "edgetl"


def data_home() -> Path | None:
    """`$EDGETL_DATA_HOME`: a folder holding named datasets (e.g. `hymenoptera/`), if set."""
    value = os.environ.get("EDGETL_DATA_HOME")
    # Absolute: split.json records the dataset root, and a relative one would mean another folder elsewhere.
    return Path(value).expanduser().absolute() if value else None


def offline() -> bool:
    """`EDGETL_OFFLINE=1` forbids every download (CI, air-gapped build machines)."""
    return os.environ.get("EDGETL_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
