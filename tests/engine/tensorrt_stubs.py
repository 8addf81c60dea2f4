"""Read NVIDIA's TensorRT type stubs (the `tensorrt-stubs` package) without importing them.

The stubs are installed with `pip install --no-deps --target DIR tensorrt-stubs==10.13.0.35.1`
into a folder of their own, never into the test environment (there `import tensorrt` would
succeed as an empty package). `.ci/run` does that and sets EDGETL_TENSORRT_STUBS=DIR. The
10.13 stubs have syntax errors (a parameter without a default after ones with defaults, e.g.
`INetworkDefinition.add_scale_nd`; parameters named after Python keywords, e.g. `in`);
`patched_source` gives the former `= ...` and renames the latter, so the file parses, which is all
a stub needs.
"""

from __future__ import annotations

import ast
import keyword
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

STUBS_ENV = "EDGETL_TENSORRT_STUBS"
BINDINGS = Path("tensorrt_bindings") / "tensorrt.pyi"
PACKAGE = Path("tensorrt_bindings") / "__init__.pyi"


def stubs_folder() -> Path | None:
    folder = os.environ.get(STUBS_ENV)
    return Path(folder) if folder and (Path(folder) / BINDINGS).is_file() else None


def patched_source(text: str, limit: int = 50) -> str:
    """`text` with every 'non-default argument follows default argument' signature repaired."""
    lines = [
        _rename_keyword_parameters(line) if line.lstrip().startswith("def ") else line for line in text.splitlines()
    ]
    for _ in range(limit):
        try:
            ast.parse("\n".join(lines))
            return "\n".join(lines) + "\n"
        except SyntaxError as error:
            if error.lineno is None or "default argument" not in str(error.msg):
                raise
            lines[error.lineno - 1] = _default_trailing(lines[error.lineno - 1])
    raise SyntaxError(f"more than {limit} signatures to repair")


_KEYWORD_PARAMETER = re.compile(r"([(,]\s*)(" + "|".join(keyword.kwlist) + r")(\s*[:,)=])")


def _rename_keyword_parameters(line: str) -> str:
    """`def f(self, in: X)` (a C++ name the stub generator kept) -> `in_`: a keyword cannot be a parameter."""
    return _KEYWORD_PARAMETER.sub(lambda m: f"{m.group(1)}{m.group(2)}_{m.group(3)}", line)


def _default_trailing(line: str) -> str:
    head, _, rest = line.partition("(")
    params, close, tail = rest.rpartition(")")
    parts, seen_default = [], False
    for part in _split_params(params):
        if "=" in part:
            seen_default = True
        elif seen_default and part.strip() not in ("*", "/") and not part.strip().startswith("*"):
            part = f"{part} = ..."
        parts.append(part)
    return f"{head}({','.join(parts)}{close}{tail}"


def _split_params(params: str) -> list[str]:
    """Split on top-level commas (annotations such as dict[str, int] contain commas)."""
    parts, depth, current = [], 0, ""
    for char in params:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


@dataclass
class StubClass:
    name: str
    attributes: set[str] = field(default_factory=set)  # annotated names, properties, documented :ivar:s
    methods: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # name -> [(required, total)] per overload


def _arity(function: ast.FunctionDef) -> tuple[int, int]:
    positional = [*function.args.posonlyargs, *function.args.args]
    is_static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list)
    if positional and not is_static and positional[0].arg in ("self", "this", "cls"):
        positional = positional[1:]
    total = len(positional) if function.args.vararg is None else 10**6
    return len(positional) - len(function.args.defaults), total


def read_stub_classes(folder: Path) -> dict[str, StubClass]:
    tree = ast.parse(patched_source((folder / BINDINGS).read_text()))
    classes: dict[str, StubClass] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        stub = StubClass(node.name)
        docstring = ast.get_docstring(node) or ""
        stub.attributes |= set(re.findall(r":ivar (\w+):", docstring))
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                stub.attributes.add(item.target.id)
            elif isinstance(item, ast.Assign):
                stub.attributes |= {t.id for t in item.targets if isinstance(t, ast.Name)}
            elif isinstance(item, ast.FunctionDef):
                decorators = {d.id if isinstance(d, ast.Name) else getattr(d, "attr", "") for d in item.decorator_list}
                if "property" in decorators or "setter" in decorators:
                    stub.attributes.add(item.name)
                else:
                    stub.methods.setdefault(item.name, []).append(_arity(item))
        classes[node.name] = stub
    return classes


def read_module_functions(folder: Path) -> set[str]:
    tree = ast.parse(patched_source((folder / PACKAGE).read_text()))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def patch_in_place(folder: Path) -> list[Path]:
    """Rewrite every .pyi under `folder` that does not parse (for mypy, which reads them as they are)."""
    patched = []
    for stub in sorted(folder.rglob("*.pyi")):
        text = stub.read_text()
        fixed = patched_source(text)
        if fixed != text + ("" if text.endswith("\n") else "\n") and fixed.rstrip("\n") != text.rstrip("\n"):
            stub.write_text(fixed)
            patched.append(stub)
    return patched


if __name__ == "__main__":  # python -m tests.engine.tensorrt_stubs DIR   (.ci/run, before mypy)
    import sys

    for path in patch_in_place(Path(sys.argv[1])):
        print(f"patched {path}")
