"""The import contracts in pyproject.toml hold, and an import that breaks a layer is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint(cwd: Path, package_parent: Path) -> subprocess.CompletedProcess[str]:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.fail("lint-imports is missing: pip install -e '.[dev]' (import-linter)")
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(package_parent), "HOME": str(cwd)}
    config = str(REPO / "pyproject.toml")
    return subprocess.run(
        [lint, "--no-cache", "--config", config], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_package_keeps_its_layers(tmp_path: Path) -> None:
    done = _lint(tmp_path, REPO)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "injected", "reported"),
    [
        ("files.py", "from edgetl import pipeline", "edgetl.files is not allowed to import edgetl.pipeline"),
        ("stages/export.py", "from edgetl.stages import optimize", "edgetl.stages.export"),
        ("runtime/predictor.py", "import torch", "edgetl.runtime.predictor -> torch"),
    ],
)
def test_an_injected_upward_import_breaks_the_contracts(
    tmp_path: Path, module: str, injected: str, reported: str
) -> None:
    copy = tmp_path / "src"
    shutil.copytree(REPO / "edgetl", copy / "edgetl", ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "edgetl" / module
    target.write_text(target.read_text() + f"\n\ndef _injected() -> None:\n    {injected}  # noqa\n")
    done = _lint(tmp_path, copy)
    assert done.returncode == 1, done.stdout[-3000:]
    assert reported in done.stdout, done.stdout[-3000:]


def test_every_top_level_module_has_a_layer() -> None:
    """A new module outside the layers list would escape the contract: each one is placed."""
    tomllib = pytest.importorskip("tomllib")
    layers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    placed = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    package = REPO / "edgetl"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert modules == placed, f"not placed: {sorted(modules - placed)}; gone: {sorted(placed - modules)}"
