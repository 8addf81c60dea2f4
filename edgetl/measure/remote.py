"""`edgetl bench BUNDLE --on user@host`: measure a bundle on the device, from the build machine, over SSH.

The build machine's timings say nothing about a Pi or a Jetson. This copies the bundle to a fresh
temporary folder on the device (`scp`), runs the device's own `edgetl bench` there (the torch-free
core install, or whatever `remote_edgetl` names), brings `bench.json` and `bench.md` back, and removes
the folder. The figures are the device's, labelled with its description (CPU, OS) and the SSH
destination they came from. Only the OpenSSH client is needed here; keys, ports and jump hosts come
from `~/.ssh/config` or `-o` options (`ssh_options`).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgetl import layout
from edgetl.bundle import read_bundle
from edgetl.errors import DependencyError, UserInputError, VerificationError, first_line
from edgetl.files import write_json_atomic, write_text_atomic

# `edgetl bench BUNDLE` on the device exits 4 when a model disagrees with the reference: the figures exist.
_REFERENCE_DISAGREES = 4


def _run(command: list[str], what: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise DependencyError(f"{command[0]} not found", hint="install the OpenSSH client") from None
    except subprocess.TimeoutExpired:
        raise UserInputError(f"{what}: no answer within {timeout:.0f} s") from None


def _failed(done: subprocess.CompletedProcess[str], what: str) -> UserInputError:
    """One line: the last thing ssh, scp or the device's edgetl said (its own error line), or the exit code."""
    said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return UserInputError(f"{what}: {said[-1] if said else f'exit code {done.returncode}'}")


def bench_remote(
    bundle_dir: str | Path,
    destination: str,
    output: Path | None = None,
    remote_edgetl: str = "edgetl",
    ssh_options: Sequence[str] = (),
    timeout: float = 1800.0,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Measure the bundle on `destination` (user@host); write its bench.json/bench.md into `output`."""
    if not destination or destination.startswith("-") or any(c.isspace() for c in destination):
        raise UserInputError(f"--on {destination!r}: expected user@host (or a host from ~/.ssh/config)")
    bundle = read_bundle(bundle_dir)  # refuse a damaged bundle here, before copying it anywhere
    options = [part for option in ssh_options for part in ("-o", option)]
    ssh = ["ssh", "-o", "BatchMode=yes", *options, destination]
    scp = ["scp", "-q", "-o", "BatchMode=yes", *options]
    where = f"ssh {destination}"

    made = _run([*ssh, "mktemp -d -t edgetl-bench.XXXXXX"], where, 60)
    if made.returncode != 0 or not made.stdout.strip():
        raise _failed(made, where)
    remote = made.stdout.strip().splitlines()[-1]
    try:
        log(f"copying the bundle to {destination}:{remote}")
        copied = _run(
            [*scp, "-r", str(bundle.root), f"{destination}:{remote}/bundle"], f"scp to {destination}", timeout
        )
        if copied.returncode != 0:
            raise _failed(copied, f"scp to {destination}")
        log(f"measuring on {destination} with `{remote_edgetl} bench`")
        command = f"cd {shlex.quote(remote)} && {remote_edgetl} bench bundle --output {layout.BUNDLE_BENCH_DIR} --quiet"
        measured = _run([*ssh, command], f"{where}: {remote_edgetl} bench", timeout)
        if measured.returncode not in (0, _REFERENCE_DISAGREES):
            raise _failed(measured, f"{where}: {remote_edgetl} bench")
        out = Path(output) if output else bundle.root / layout.BUNDLE_BENCH_DIR / _folder_name(destination)
        out.mkdir(parents=True, exist_ok=True)
        partial = out / (layout.BUNDLE_BENCH_JSON + ".partial")
        remote_json = f"{destination}:{remote}/{layout.BUNDLE_BENCH_DIR}/{layout.BUNDLE_BENCH_JSON}"
        fetched = _run([*scp, remote_json, str(partial)], f"scp from {destination}", 300)
        if fetched.returncode != 0:
            raise _failed(fetched, f"scp from {destination}")
    finally:
        _run([*ssh, f"rm -rf {shlex.quote(remote)}"], where, 60)
    try:
        results = json.loads(partial.read_text())
    except (OSError, ValueError) as error:
        raise UserInputError(f"{destination}: its bench.json is unreadable ({first_line(error)})") from None
    finally:
        partial.unlink(missing_ok=True)
    if not isinstance(results, dict) or not isinstance(results.get("artifacts"), dict):
        raise UserInputError(f"{destination}: its bench.json is not an edgetl bundle benchmark")
    results["measured_on"] = {"ssh": destination, "edgetl": remote_edgetl}  # the device itself: results["machine"]
    from edgetl.measure.device_bench import render

    write_json_atomic(out / layout.BUNDLE_BENCH_JSON, results)
    write_text_atomic(out / layout.BUNDLE_BENCH_MD, render(results))
    if measured.returncode == _REFERENCE_DISAGREES:
        raise VerificationError(
            f"{destination}: the bundle's model disagrees with the build machine's reference logits there "
            f"(figures in {out / layout.BUNDLE_BENCH_MD})"
        )
    return results


def _folder_name(destination: str) -> str:
    """A folder name for a destination: user@host -> host, other characters made safe."""
    host = destination.rsplit("@", 1)[-1]
    return "on-" + "".join(c if c.isalnum() or c in ".-_" else "_" for c in host)


__all__ = ["bench_remote"]
