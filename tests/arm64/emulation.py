"""edgetl's torch-free runtime on arm64, under qemu-user, from the root `tests/arm64/make_root.sh` makes.

The root holds Debian 12's arm64 Python 3.11 and the aarch64 wheels of edgetl's core dependencies and
LiteRT; the edgetl under test is this working tree's package folder (pure Python: what its wheel
installs). Programs run as `qemu-aarch64-static -cpu cortex-a76 -L ROOT ROOT/usr/bin/python3.11`:
qemu reads the dynamic linker and shared libraries from ROOT, and every other path (bundles, images)
from the host.
Emulated timings are not latency: nothing measured here is reported as such.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT_VARIABLE = "EDGETL_ARM64_ROOT"
REQUIRE_VARIABLE = "EDGETL_REQUIRE_ARM64"
REPO = Path(__file__).resolve().parents[2]
# The emulated core: a Raspberry Pi 5's (and many Android phones' big core), dot-product int8 but no SVE.
# Under Debian 12's qemu 7.2, its default `max` CPU (SVE2, SME) made XNNPACK's int8 kernels return wrong
# logits (11 off, half the labels flipped) where this core and x86 agree exactly.
CPU = "cortex-a76"
MAKE_ROOT = "bash tests/arm64/make_root.sh"


@dataclass(frozen=True)
class Arm64:
    """An emulated arm64 Python with edgetl installed: `run` starts `python3.11 ARGS` there."""

    qemu: Path
    root: Path
    site: Path

    def run(self, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": f"{self.site}:{self.root / 'opt/edgetl-deps'}",
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "EDGETL_OFFLINE": "1",
        }
        command = [str(self.qemu), "-cpu", CPU, "-L", str(self.root), str(self.root / "usr/bin/python3.11"), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)

    def edgetl(self, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return self.run(["-m", "edgetl", *args], timeout=timeout)


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but {reason}")
    pytest.skip(reason)


def arm64_python(workdir: Path) -> Arm64:
    """The emulated arm64 Python, with this working tree's edgetl installed under `workdir`; skips (or, with
    EDGETL_REQUIRE_ARM64=1, fails) with one line saying what is missing."""
    qemu = shutil.which("qemu-aarch64-static")
    if qemu is None:
        _unavailable("qemu-aarch64-static not found (apt-get install qemu-user-static)")
    configured = os.environ.get(ROOT_VARIABLE)
    if not configured:
        _unavailable(f"no arm64 root: run `{MAKE_ROOT}` and set {ROOT_VARIABLE} to the path it prints")
    root = Path(configured)  # type: ignore[arg-type]
    if not (root / ".edgetl-recipe").is_file() or not (root / "usr/bin/python3.11").is_file():
        _unavailable(f"{ROOT_VARIABLE}={root} is not a finished arm64 root (run `{MAKE_ROOT} {root}`)")
    site = workdir / "edgetl-site"
    # edgetl is pure Python: its package folder is what its wheel installs.
    shutil.copytree(REPO / "edgetl", site / "edgetl", ignore=shutil.ignore_patterns("__pycache__"))
    return Arm64(Path(qemu), root, site)  # type: ignore[arg-type]
