"""Which edgetl source a module runs, read from the code: its import closure inside the package.

A stage's cache key includes a digest of this closure, so no hand-kept list of files can fall out of
step with the imports (DVC hashes what a stage runs, not what someone remembered to list). The closure
follows, statically and transitively:

- every `import edgetl...` and `from edgetl... import ...` anywhere in a module, including the lazy
  imports inside functions (that is where the heavy ones are);
- string references of the form "edgetl.pkg.module" or "edgetl.pkg.module:attribute", which the
  backend and backbone registries resolve with importlib;
- the package `__init__.py` files Python runs on the way, and the non-Python source a package ships
  beside its modules (the web page in `edgetl/web/assets`).

Imports under `if TYPE_CHECKING:` are not followed: they never run.
"""

from __future__ import annotations

import ast
import hashlib
import re
from functools import cache
from pathlib import Path

PACKAGE = "edgetl"
PACKAGE_DIR = Path(__file__).resolve().parent
_DATA_SUFFIXES = (".mjs", ".html")
_REFERENCE = re.compile(r"^edgetl(?:\.[A-Za-z_][A-Za-z0-9_]*)+(?::[A-Za-z_][A-Za-z0-9_]*)?$")


def module_file(name: str, root: Path = PACKAGE_DIR) -> Path | None:
    """The file of module `edgetl.a.b` under `root` (a .py file or a package's __init__.py), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, root: Path) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = [PACKAGE, *relative.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _referenced(path: Path, root: Path) -> set[str]:
    """Module names `path` imports or names in a registry string (edgetl's only)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    this = _module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    names: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules imported by name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _REFERENCE.match(node.value):
            names.add(node.value.partition(":")[0])
    return {name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:` blocks (imports for type checkers never run)."""
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(module: str, root: Path = PACKAGE_DIR) -> list[Path]:
    """Every edgetl file `module` can run: its transitive imports, registry references and package data."""
    return list(_closure(module, root))


@cache
def _closure(module: str, root: Path) -> tuple[Path, ...]:
    seen: set[Path] = set()
    pending = [module]
    while pending:
        for name in _with_parents(pending.pop()):
            path = module_file(name, root)
            if path is None or path in seen:
                continue
            seen.add(path)
            pending.extend(_referenced(path, root))
    data = {
        extra
        for path in seen
        if path.name == "__init__.py"
        for extra in path.parent.rglob("*")
        if extra.suffix in _DATA_SUFFIXES and extra.is_file() and not _in_subpackage(extra, path.parent)
    }
    return tuple(sorted(seen | data))


def _in_subpackage(path: Path, package: Path) -> bool:
    """True when `path` lies in a folder below `package` that is itself a package (its data is its own)."""
    folder = path.parent
    while folder != package:
        if (folder / "__init__.py").is_file():
            return True
        folder = folder.parent
    return False


def source_digest(module: str, root: Path = PACKAGE_DIR) -> str:
    """SHA-256 over the import closure of `module`: file names (relative) and contents."""
    digest = hashlib.sha256()
    for path in import_closure(module, root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
