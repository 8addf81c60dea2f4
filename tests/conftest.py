from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import SHARED_HYMENOPTERA, make_dataset, tiny_profile, write_profile


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's cache or the network from a test."""
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "edgetl-cache"))
    monkeypatch.setenv("EDGETL_OFFLINE", "1")
    monkeypatch.delenv("EDGETL_DATA_HOME", raising=False)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "colours", train=12, val=5)


@pytest.fixture(scope="session")
def built_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real (tiny) build shared by the tests that only read its outputs."""
    from edgetl.console import Log
    from edgetl.pipeline import build

    os.environ["EDGETL_OFFLINE"] = "1"
    base = tmp_path_factory.mktemp("build")
    profile = write_profile(base / "tiny.yaml", tiny_profile(tiny_data, base / "run"))
    return build(profile, log=Log(quiet=True))


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    if not (SHARED_HYMENOPTERA / "train").is_dir():
        pytest.skip(f"shared dataset not found at {SHARED_HYMENOPTERA}")
    return SHARED_HYMENOPTERA
