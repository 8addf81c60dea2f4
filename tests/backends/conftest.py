"""One build re-targeted at android-arm64 that converts to LiteRT and ExecuTorch, shared by both backends' tests."""

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


@pytest.fixture(scope="session")
def arm64_run(built_run, tmp_path_factory: pytest.TempPathFactory):
    """The tiny build converting to LiteRT and ExecuTorch: training and the ONNX models come from the cache."""
    if not (HAS_LITERT_CONVERTER and HAS_EXECUTORCH):
        pytest.skip("litert-torch / ai-edge-quantizer / executorch not installed (edgetl[litert-convert,executorch])")
    from edgetl.console import Log
    from edgetl.pipeline import build

    base = tmp_path_factory.mktemp("arm64")
    shutil.copytree(built_run.run_dir, base / "run")
    profile = tiny_profile(
        data_root(built_run.run_dir),
        base / "run",
        target="android-arm64",
        convert={"runtimes": ["litert", "executorch"]},
    )
    return build(write_profile(base / "android.yaml", profile), log=Log(quiet=True))
