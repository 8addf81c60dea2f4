"""Builds re-targeted at android-arm64 that convert to LiteRT or ExecuTorch, for those backends' tests."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from edgetl import layout
from tests.helpers import tiny_profile, write_profile

HAS_LITERT_CONVERTER = all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert"))
HAS_EXECUTORCH = all(importlib.util.find_spec(m) for m in ("executorch", "torchao"))


def data_root(run_dir: Path) -> Path:
    return Path(json.loads((run_dir / layout.MANIFEST).read_text())["profile"]["resolved"]["data"]["root"])


def _android_build(built_run, tmp_path_factory: pytest.TempPathFactory, runtime: str):
    """The tiny build re-targeted at android-arm64, converting to one runtime: training and ONNX come from the cache.

    One build per runtime (not one for both): each backend's test module needs only its own, and under
    pytest-xdist (`--dist loadfile`) the two modules build theirs in parallel, in different workers.
    """
    from edgetl.console import Log
    from edgetl.pipeline import build

    base = tmp_path_factory.mktemp(f"android-{runtime}")
    shutil.copytree(built_run.run_dir, base / "run")
    profile = tiny_profile(
        data_root(built_run.run_dir),
        base / "run",
        target="android-arm64",
        convert={"runtimes": [runtime]},
        budgets={"artifact": f"{runtime}_int8"},  # the target ships LiteRT; an ExecuTorch-only build names its own
        benchmark={"memory": True},  # their tests check each runtime's peak memory
    )
    return build(write_profile(base / "android.yaml", profile), log=Log(quiet=True))


@pytest.fixture(scope="session")
def litert_run(built_run, tmp_path_factory: pytest.TempPathFactory):
    if not HAS_LITERT_CONVERTER:
        pytest.skip("litert-torch / ai-edge-quantizer / ai-edge-litert not installed (edgetl[litert-convert])")
    return _android_build(built_run, tmp_path_factory, "litert")


@pytest.fixture(scope="session")
def executorch_run(built_run, tmp_path_factory: pytest.TempPathFactory):
    if not HAS_EXECUTORCH:
        pytest.skip("executorch / torchao not installed (edgetl[executorch])")
    return _android_build(built_run, tmp_path_factory, "executorch")
