"""A stage's cache key covers the edgetl source it can run, read from its imports (edgetl.source)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgetl.source import PACKAGE_DIR, import_closure, source_digest

STAGES = {
    name: f"edgetl.stages.{name}"
    for name in ("data", "finetune", "export", "optimize", "convert", "benchmark", "package", "browser", "device")
}


def _relative(module: str) -> set[str]:
    return {path.relative_to(PACKAGE_DIR).as_posix() for path in import_closure(module)}


def test_every_module_a_stage_imports_is_in_its_closure() -> None:
    """What Python actually loads when a stage module is imported is a subset of the static closure."""
    for module in STAGES.values():
        loaded = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys, json, {module}; "
                "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() "
                "if n.split('.')[0] == 'edgetl' and getattr(m, '__file__', None))))",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        files = {Path(f).resolve().relative_to(PACKAGE_DIR).as_posix() for f in json.loads(loaded.stdout)}
        assert files, module
        missing = files - _relative(module)
        assert not missing, f"{module} loads {sorted(missing)}, which its code digest does not cover"


def test_the_closure_follows_lazy_imports_registry_strings_and_package_data() -> None:
    export, convert, package = (_relative(STAGES[n]) for n in ("export", "convert", "package"))
    # Backbone builders are named by "module:function" strings in the registry.
    assert {"backbones/efficientnet_lite.py", "backbones/torchvision_models.py"} <= export & convert
    # Converters are named by strings in each backend's catalogue entry, and run inside convert.
    assert {"backends/litert/convert.py", "backends/executorch/convert.py", "backends/openvino/convert.py"} <= convert
    # The web page the package stage copies into a web bundle is not Python, and is covered.
    assert {"web/assets/edgetl-web.mjs", "web/assets/index.html", "web/assets/app.mjs"} <= package
    # The benchmark harness is not reachable from training: editing it does not retrain.
    assert "measure/artifacts.py" not in _relative(STAGES["finetune"]) | _relative(STAGES["data"])


def _edited_copy(tmp_path: Path, relative: str) -> Path:
    copy = tmp_path / "edgetl"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / relative).open("a") as handle:
        handle.write("\n# an edit\n")
    return copy


@pytest.mark.parametrize(
    ("edited", "invalidated", "kept"),
    [
        ("backbones/efficientnet_lite.py", {"export", "convert", "finetune"}, set()),
        ("measure/artifacts.py", {"benchmark"}, {"data", "finetune", "export"}),
        ("web/assets/edgetl-web.mjs", {"package", "browser"}, {"data", "finetune", "export", "optimize"}),
    ],
)
def test_an_edit_invalidates_the_stages_that_can_run_the_file(
    tmp_path: Path, edited: str, invalidated: set[str], kept: set[str]
) -> None:
    copy = _edited_copy(tmp_path, edited)
    for name in invalidated:
        assert source_digest(STAGES[name], copy) != source_digest(STAGES[name]), f"{edited} must invalidate {name}"
    for name in kept:
        assert source_digest(STAGES[name], copy) == source_digest(STAGES[name]), f"{edited} must not invalidate {name}"


def test_type_checking_imports_and_the_public_api_facade_are_not_in_stage_closures() -> None:
    """Every module imports the edgetl package, whose lazy public names reach the whole build: no stage runs them."""
    for stage in ("data", "finetune", "export", "optimize", "convert", "benchmark", "package", "browser", "device"):
        closure = _relative(f"edgetl.stages.{stage}")
        assert "__init__.py" in closure and "api.py" not in closure and "pipeline.py" not in closure, stage
    assert "api.py" in _relative("edgetl.cli")  # the CLI does run it
