"""A description of the machine a benchmark ran on, recorded in every report."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgetl import __version__

# CPU features that decide which int8 / fp32 kernels ONNX Runtime and PyTorch can use.
_INTERESTING_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "i8mm",
)


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return info
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key and key not in info:
            info[key] = value.strip()
    return info


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@lru_cache(maxsize=1)
def describe_machine() -> dict[str, Any]:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": info.get("model name") or info.get("Hardware") or platform.processor() or "unknown",
        "architecture": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_flags": sorted(f for f in _INTERESTING_FLAGS if f in flags),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def machine_signature() -> dict[str, Any]:
    """The parts of the machine description that change benchmark numbers (for stage caching)."""
    machine = describe_machine()
    return {k: machine[k] for k in ("cpu", "architecture", "usable_cpus", "cpu_flags")}


def int8_saturates() -> bool:
    """True on x86 CPUs without VNNI, where ONNX Runtime's u8s8 int8 kernels (vpmaddubsw) can saturate int16.

    With full 8-bit weights two products can overflow the int16 intermediate on those CPUs; VNNI
    (AVX512-VNNI, AVX-VNNI) and ARM dot-product kernels accumulate in int32 and do not.
    """
    machine = describe_machine()
    if machine["architecture"].lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(machine["cpu_flags"])


def package_versions(*names: str) -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version(), "edgetl": __version__}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
