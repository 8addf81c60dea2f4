"""The TensorRT stand-ins the engine tests use offer only names and arities that TensorRT has.

The fake module in test_engine.py is written to make edgetl's TensorRT code run without a GPU,
so by itself it proves nothing about the real API: a name misspelled in both edgetl and the fake
would pass. Here every enum member, method (with its number of arguments) and attribute the fake
offers is looked up in NVIDIA's type stubs for TensorRT 10.13 (`tensorrt-stubs`, read as text,
see tensorrt_stubs.py). Names that exist only to let the fake record what edgetl did are listed
per class below, each one named.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
from pathlib import Path

import pytest

from tests.engine.tensorrt_stubs import patched_source, read_module_functions, read_stub_classes, stubs_folder
from tests.engine.test_engine import _fake_tensorrt

# Attributes the stand-ins keep for the tests' own assertions (what edgetl asked for), not TensorRT API.
FAKE_ONLY: dict[str, set[str]] = {
    "IBuilderConfig": {"flags", "pools", "profiles", "timing_cache"},  # real: set_flag/get_flag, get_timing_cache
    "INetworkDefinition": {"inputs", "outputs", "layers", "populate"},  # real: get_input/get_output/get_layer
    "OnnxParser": {"network", "errors"},
    "ITimingCache": {"gpu", "entries"},
    "IOptimizationProfile": set(),
    "Builder": {"logger"},
    "ICudaEngine": {"plan"},
    "IExecutionContext": {"engine", "addresses", "shape"},
    "Runtime": {"logger"},
    "ILogger": set(),
    "ITensor": set(),
    "ILayer": set(),
    "ParserError": set(),
}
# Classes edgetl constructs itself (the others it only receives), so their constructors must match too.
CONSTRUCTED = {"ILogger", "Builder", "OnnxParser", "Runtime"}
ENUMS = (
    "MemoryPoolType",
    "BuilderFlag",
    "DeviceType",
    "HardwareCompatibilityLevel",
    "LayerType",
    "TensorIOMode",
    "NetworkDefinitionCreationFlag",
    "DataType",
)

needs_stubs = pytest.mark.skipif(
    stubs_folder() is None, reason="tensorrt-stubs not provided (EDGETL_TENSORRT_STUBS; .ci/run installs them)"
)


def _init_attributes(cls: type) -> set[str]:
    """Public `self.X = ...` targets of the stand-in's __init__ (what edgetl may read as attributes)."""
    init = cls.__dict__.get("__init__")
    if init is None:
        return set()
    tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    names: set[str] = set()
    for node in ast.walk(tree):
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            for element in target.elts if isinstance(target, ast.Tuple) else [target]:
                if (
                    isinstance(element, ast.Attribute)
                    and isinstance(element.value, ast.Name)
                    and element.value.id == "self"
                ):
                    names.add(element.attr)
    return {name for name in names if not name.startswith("_")}


def _positional(function: object) -> int:
    parameters = list(inspect.signature(function).parameters.values())  # type: ignore[arg-type]
    return len([p for p in parameters[1:] if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])


def fake_vs_stubs(fake: types.ModuleType, stubs: Path) -> list[str]:
    """Every name the fake offers that TensorRT 10.13 does not have, one line each."""
    classes = read_stub_classes(stubs)
    problems = []
    for enum in ENUMS:
        real = classes[enum].attributes
        problems += [f"{enum}.{m}" for m in vars(getattr(fake, enum)) if not m.startswith("_") and m not in real]
    functions = read_module_functions(stubs)
    problems += [f"tensorrt.{n}()" for n in ("nptype",) if hasattr(fake, n) and n not in functions]
    for real_name, cls in fake.stands_for.items():
        stub = classes[real_name]
        fake_only = FAKE_ONLY[real_name]
        for name, member in vars(cls).items():
            if name.startswith("_") or name in fake_only or isinstance(member, type):
                continue
            if isinstance(member, property):
                if name not in stub.attributes:
                    problems.append(f"{real_name}.{name} (property)")
                continue
            if callable(member):
                if name not in stub.methods:
                    problems.append(f"{real_name}.{name}()")
                    continue
                count = _positional(member)
                if not any(low <= count <= high for low, high in stub.methods[name]):
                    problems.append(f"{real_name}.{name}() takes {stub.methods[name]} arguments, the fake {count}")
        for name in _init_attributes(cls) - fake_only:
            if name not in stub.attributes and name not in stub.methods:
                problems.append(f"{real_name}.{name} (attribute)")
        if real_name in CONSTRUCTED and "__init__" in vars(cls):
            count = _positional(cls.__init__)
            if not any(low <= count <= high for low, high in stub.methods.get("__init__", [])):
                problems.append(f"{real_name}(...) takes {stub.methods.get('__init__')} arguments, the fake {count}")
    return problems


@needs_stubs
def test_every_name_the_fake_tensorrt_offers_exists_in_tensorrt_10_13() -> None:
    folder = stubs_folder()
    assert folder is not None
    assert fake_vs_stubs(_fake_tensorrt(), folder) == []


@needs_stubs
def test_a_misspelling_shared_by_edgetl_and_the_fake_is_caught() -> None:
    folder = stubs_folder()
    assert folder is not None
    fake = _fake_tensorrt()
    fake.BuilderFlag.FP61 = "FP61"
    fake.stands_for["IBuilderConfig"].dla_core = lambda self: 0  # config.DLA_core is the real name
    fake.stands_for["IExecutionContext"].execute_async_v2 = lambda self, bindings, stream: True  # removed in 10.0
    problems = fake_vs_stubs(fake, folder)
    assert "BuilderFlag.FP61" in problems and "IBuilderConfig.dla_core()" in problems
    assert "IExecutionContext.execute_async_v2()" in problems


def test_signature_repair_gives_trailing_parameters_a_default() -> None:
    broken = "class A:\n    def f(self, a: int, b: W = None, c: W, d: dict[str, int]) -> None: ...\n"
    repaired = patched_source(broken)
    assert "c: W = ..." in repaired and "d: dict[str, int] = ..." in repaired and "b: W = None" in repaired
    ast.parse(repaired)
