"""The documentation cannot rot: generated pages are current, the references list everything, and the
getting-started page's commands run, in order, on generated images.

`mkdocs build --strict` (broken links, missing pages) runs in `.ci/run`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import make_image_folder

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
GETTING_STARTED = DOCS / "getting-started.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
ISSUE_CITATION = re.compile(r"\bissues? ?#?\d+|\(#\d+\)|\btasks? ?#?\d+", re.I)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_profile_reference_is_current() -> None:
    """Byte for byte: the profile page comes from edgetl's own schema. (The CLI page's layout is typer's, which
    changes between typer releases; its completeness is tested below instead.)"""
    generator = _generator()
    assert generator.PROFILE_PAGE.read_text() == generator.profile_reference(), "run python docs/generate.py"


def _schema_fields(schema: dict[str, Any]) -> set[str]:
    """Every dotted field path of the profile schema, walked independently of docs/generate.py."""
    defs = schema["$defs"]

    def model(spec: dict[str, Any]) -> dict[str, Any] | None:
        for option in [spec, *spec.get("anyOf", [])]:
            ref = option.get("$ref")
            if ref and "properties" in defs[ref.split("/")[-1]]:
                return defs[ref.split("/")[-1]]
        return None

    def walk(properties: dict[str, Any], prefix: str) -> set[str]:
        found: set[str] = set()
        for name, spec in properties.items():
            path = f"{prefix}{name}"
            found.add(path)
            inner = model(spec)
            if inner is not None:
                found |= walk(inner["properties"], f"{path}.")
            extra = spec.get("additionalProperties")
            inner = model(extra) if isinstance(extra, dict) else None
            if inner is not None:
                found |= walk(inner["properties"], f"{path}.<parameter>.")
        return found

    return walk(schema["properties"], "")


def test_the_profile_reference_lists_every_field_of_the_schema() -> None:
    from edgetl.profile import profile_json_schema

    page = (DOCS / "reference" / "profile.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+)` \|", page, re.M))
    fields = _schema_fields(profile_json_schema())
    assert len(fields) > 150, "the walk found too few fields to mean anything"
    assert fields == listed, f"missing: {sorted(fields - listed)}; not in the schema: {sorted(listed - fields)}"
    shipped = json.loads((REPO / "profiles" / "profile.schema.json").read_text())
    assert _schema_fields(shipped) == fields, "profiles/profile.schema.json is stale: edgetl schema -o it"


def test_the_cli_reference_lists_every_command_and_option() -> None:
    """Each command's section lists each of its options: an option added without regenerating the page fails."""
    import typer.main

    from edgetl.cli import app

    page = (DOCS / "reference" / "cli.md").read_text()
    sections = dict(re.findall(r"^#{2,4} `([^`]+)`\n(.*?)(?=^#{2,4} `|\Z)", page, re.M | re.S))
    checked = 0

    def walk(command: Any, words: list[str]) -> None:
        nonlocal checked
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                walk(sub, [*words, name])
            return
        name = " ".join(words)
        assert name in sections, f"{name} missing from the CLI reference: run python docs/generate.py"
        for parameter in command.params:
            for option in parameter.opts if parameter.param_type_name == "option" else []:
                assert f"`{option}" in sections[name] or f", {option}" in sections[name], f"{name} {option}"
                checked += 1

    walk(typer.main.get_command(app), ["edgetl"])
    assert checked > 40


def test_user_facing_text_cites_no_issue_numbers_and_the_readme_stays_short() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "the README is the front door, not the manual: move it to docs/"
    # The site publishes benchmarks/results/*.md too (docs/hooks.py).
    pages = [REPO / "README.md", *sorted(DOCS.rglob("*.md")), *sorted((REPO / "benchmarks" / "results").glob("*.md"))]
    for page in pages:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            assert not ISSUE_CITATION.search(line), f"{page.relative_to(REPO)}:{number}: {line}"
    linked = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert linked and all((REPO / link).is_file() for link in linked), linked


def _blocks(page: Path) -> list[tuple[str, str, str]]:
    """(section heading, language, body) of every fenced block, in page order."""
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        headings = re.findall(r"^## (.+)$", text[: match.start()], re.M)
        blocks.append((headings[-1] if headings else "", match.group(1), match.group(2)))
    return blocks


def _commands(body: str) -> list[str]:
    lines = []
    for line in body.splitlines():
        command = re.split(r"\s+#\s", line.strip(), maxsplit=1)[0].strip()
        if command and not command.startswith("#"):
            lines.append(command)
    return lines


def test_the_install_commands_are_the_ones_ci_runs() -> None:
    install = [body for heading, lang, body in _blocks(GETTING_STARTED) if "Install" in heading and lang == "bash"]
    assert len(install) == 1
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    for command in _commands(install[0]):
        for step in command.split(" && "):
            assert step in ci, f"getting started says `{step}` but .ci/run does not run it"
        assert command in readme, f"getting started and the README install differently: {command}"


def test_a_new_user_following_getting_started_reaches_a_bundle_and_a_prediction(tmp_path: Path) -> None:
    """Every command and Python block after the install, verbatim, in order, in a fresh folder of images."""
    make_image_folder(tmp_path / "my-images", {"reds": 14, "blues": 14}, seed=3)
    shutil.copy(tmp_path / "my-images" / "reds" / "000.jpg", tmp_path / "photo.jpg")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["EDGETL_OFFLINE"] = "1"
    ran: list[str] = []
    outputs: dict[str, str] = {}
    for heading, lang, body in _blocks(GETTING_STARTED):
        if "Install" in heading or lang not in ("bash", "python"):
            continue
        steps = _commands(body) if lang == "bash" else [body]
        for step in steps:
            argv = ["bash", "-c", step] if lang == "bash" else [sys.executable, "-c", step]
            done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, f"`{step}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            ran.append(step if lang == "bash" else "python")
            outputs[step if lang == "bash" else "python"] = done.stdout
    assert ran[:4] == [
        "edgetl data check my-images",
        "edgetl init my-images --target x86-cpu",
        "edgetl validate my-images.yaml",
        "edgetl build my-images.yaml",
    ], ran
    assert len(ran) == 10, ran
    run = tmp_path / "runs" / "my-images"
    assert (run / "bundle" / "bundle.json").is_file() and (tmp_path / "my-model" / "model.onnx").is_file()
    prediction = outputs["edgetl predict my-model photo.jpg"].strip().split("\t")
    assert prediction[0] == "photo.jpg" and prediction[1].split()[0] == "reds", prediction
    python_lines = outputs["python"].splitlines()
    assert len(python_lines) == 2 and python_lines[0].split()[0] == "reds", python_lines
    report = json.loads((run / "report.json").read_text())
    assert report["passed"] and report["deployed_artifact"] == "onnx_int8"
    # `edgetl build --data` builds the same resolved profile: every stage is reused, nothing retrained.
    manifest = json.loads((run / "manifest.json").read_text())
    assert all(stage["skipped"] for stage in manifest["stages"].values()), manifest["stages"]


@pytest.mark.parametrize("command", ["edgetl --help", "edgetl targets", "edgetl backbones"])
def test_commands_the_docs_point_to_answer(command: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edgetl", *shlex.split(command)[1:]], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip(), done.stderr


def test_the_layout_in_the_development_guide_names_every_module() -> None:
    text = (DOCS / "development.md").read_text()
    layout = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    modules = sorted(
        path.stem if path.is_file() else path.name
        for path in (REPO / "edgetl").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path.is_dir() and (path / "__init__.py").is_file())
    )
    missing = [name for name in modules if not re.search(rf"\b{re.escape(name)}(\.py|/)", layout)]
    assert not missing, f"docs/development.md's Layout does not name: {missing}"
