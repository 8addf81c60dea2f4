"""The Python-API example runs as a user would run it, on generated images (a real build through edgetl.build)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import make_dataset

REPO = Path(__file__).resolve().parents[1]


def test_the_python_api_example_builds_measures_and_predicts(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "images", train=12, val=5)
    env = {**os.environ, "EDGETL_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "python_api.py"), str(data), str(tmp_path / "run")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "stages: data -> finetune -> export -> optimize -> benchmark -> package", lines
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert set(rows) == {"torch_fp32", "onnx_fp32", "onnx_int8"} and all(" ms " in row for row in rows.values())
    assert "deployed: onnx_int8; budgets pass" in lines
    assert f"bundle: {tmp_path / 'run' / 'bundle'}" in lines
    image, prediction = lines[-1].split(": ", 1)
    assert image == "000.jpg" and prediction.split()[0] in {"reds", "blues"}, lines[-1]
    assert (tmp_path / "run" / "profile.yaml").read_text().startswith("# Built through edgetl's Python API")
