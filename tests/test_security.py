"""Source-level guards: no code execution from profiles, checkpoints or archives can creep back in.

The behaviour is tested where it lives (YAML tags in tests/test_profile.py, zip-slip and checksums
in tests/data/test_sources.py); this scans every module so a new call site cannot skip the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgetl"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(call: ast.Call) -> str:
    """Dotted name of the called function: 'eval', 'torch.load', 'yaml.load', 'bundle.extractall'."""
    parts: list[str] = []
    node: ast.expr = call.func
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _violations(source: str, relative: str) -> list[str]:
    found: list[str] = []
    for call in _calls(ast.parse(source, filename=relative)):
        name = _name(call)
        where = f"{relative}:{call.lineno}"
        if name in ("eval", "exec", "compile", "__import__"):
            found.append(f"{where}: {name}() is not allowed")
        if name.startswith(("pickle.", "marshal.", "shelve.")):
            found.append(f"{where}: {name} can run code")
        if name in ("yaml.unsafe_load", "yaml.full_load"):
            found.append(f"{where}: {name} can construct objects")
        if name == "yaml.load":
            loader = _keyword(call, "Loader")
            if not (isinstance(loader, ast.Name) and loader.id in ("_StrictLoader", "SafeLoader")):
                found.append(f"{where}: yaml.load without a safe loader")
        if name == "torch.load":
            flag = _keyword(call, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{where}: torch.load needs weights_only=True")
        if name.rsplit(".", 1)[-1] in ("extractall", "extract") and "data/sources.py" not in where:
            found.append(f"{where}: extract archives only through edgetl.data.sources (zip-slip check)")
    return found


def test_no_unsafe_calls_anywhere_in_the_package() -> None:
    assert len(MODULES) > 50
    found = [v for m in MODULES for v in _violations(m.read_text(), m.relative_to(PACKAGE).as_posix())]
    assert found == []


def test_the_scan_catches_what_it_looks_for() -> None:
    probe = (
        "import torch, yaml\neval('1')\ntorch.load('x')\nyaml.load('a: 1', Loader=yaml.Loader)\n"
        "torch.load('x', weights_only=True)\nzipfile.ZipFile('a').extractall('b')\n"
    )
    found = _violations(probe, "_scan_probe.py")
    assert [int(line.split(": ", 1)[0].split(":")[1]) for line in found] == [2, 3, 4, 6]


def test_strict_loader_is_a_safe_loader() -> None:
    import yaml

    from edgetl.profile import _StrictLoader

    assert issubclass(_StrictLoader, yaml.SafeLoader)


def test_archive_members_are_checked_before_extraction() -> None:
    source = (PACKAGE / "data/sources.py").read_text()
    check = source.index("escapes")  # the zip-slip refusal message
    assert check < source.index("extractall("), "members must be checked before anything is extracted"
