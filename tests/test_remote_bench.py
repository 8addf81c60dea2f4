"""`edgetl bench BUNDLE --on user@host` against a real OpenSSH server on 127.0.0.1, started by the test.

The server listens on loopback only, on a free port, with a key made for the test and no passwords;
it lives as long as this module. It needs root (sshd's privilege separation) and Debian's
openssh-server: `.ci/run` installs it and sets EDGETL_REQUIRE_SSH=1, so there a missing server fails
instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgetl import layout
from tests.helpers import run_cli

SSHD = "/usr/sbin/sshd"


def _unavailable(reason: str) -> None:
    if os.environ.get("EDGETL_REQUIRE_SSH") == "1":
        pytest.fail(f"EDGETL_REQUIRE_SSH=1 but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ssh_options(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """`-o` options that reach a loopback sshd as root with a throwaway key."""
    if not Path(SSHD).is_file() or shutil.which("ssh-keygen") is None:
        _unavailable("no OpenSSH server here (apt-get install openssh-server)")
    if os.geteuid() != 0:
        _unavailable("sshd needs root to start")
    home = tmp_path_factory.mktemp("sshd")
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)], check=True)
    shutil.copyfile(home / "client.pub", home / "authorized_keys")
    port = _free_port()
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host'}\nPidFile {home / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(home / "sshd_config")], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        if server.poll() is not None:
            pytest.fail(f"sshd did not start: {server.stderr.read() if server.stderr else ''}")
        time.sleep(0.1)
    options = [
        f"Port={port}",
        f"IdentityFile={home / 'client'}",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "LogLevel=ERROR",
        "ConnectTimeout=10",
    ]
    yield options
    server.terminate()
    server.wait(timeout=10)


def _remote_folders() -> set[str]:
    return {p.name for p in Path("/tmp").glob("edgetl-bench.*")}


def test_bench_on_a_device_over_ssh_measures_there_and_brings_the_figures_back(
    built_run, ssh_options: list[str], tmp_path: Path, capsys
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(built_run.run_dir / "bundle", bundle)
    before = _remote_folders()
    options = [f"--ssh-option={option}" for option in ssh_options]
    args = ["bench", str(bundle), "--on", "root@127.0.0.1", "--remote-edgetl", f"{sys.executable} -m edgetl"]
    code, out, err = run_cli([*args, *options, "--quiet"], capsys)
    assert code == 0, err
    results_dir = bundle / "bench" / "on-127.0.0.1"
    import json

    results = json.loads((results_dir / layout.BUNDLE_BENCH_JSON).read_text())
    assert results["measured_on"]["ssh"] == "root@127.0.0.1" and results["machine"]["cpu"]
    entry = results["artifacts"][json.loads((bundle / "bundle.json").read_text())["model"]["artifact"]]
    assert entry["reference_check"]["passed"] and entry["latency_ms"]["p50"] > 0
    assert "# tiny on `root@127.0.0.1`" in (results_dir / layout.BUNDLE_BENCH_MD).read_text() and "| p50 ms |" in out
    assert _remote_folders() == before, "the temporary folder on the device is removed"


def test_an_unreachable_device_is_one_line_and_exit_2(built_run, ssh_options: list[str], capsys) -> None:
    wrong = [f"--ssh-option={o}" for o in ssh_options if not o.startswith("Port=")] + [
        f"--ssh-option=Port={_free_port()}"
    ]
    code, _, err = run_cli(["bench", str(built_run.run_dir), "--on", "root@127.0.0.1", *wrong], capsys)
    assert code == 2 and err.startswith("edgetl: error: ssh root@127.0.0.1:") and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["bench", str(built_run.run_dir), "--on", "-oProxyCommand=x"], capsys)
    assert code == 2 and "expected user@host" in err


def test_a_build_with_on_device_reports_the_devices_own_latency(
    built_run, ssh_options: list[str], tmp_path: Path
) -> None:
    import json

    from edgetl.console import Log
    from edgetl.pipeline import build
    from tests.backends.conftest import data_root
    from tests.helpers import tiny_profile, write_profile

    shutil.copytree(built_run.run_dir, tmp_path / "run")
    on_device = {"ssh": "root@127.0.0.1", "edgetl": f"{sys.executable} -m edgetl", "ssh_options": ssh_options}
    profile = tiny_profile(data_root(built_run.run_dir), tmp_path / "run", on_device=on_device)
    outcome = build(write_profile(tmp_path / "p.yaml", profile), log=Log(quiet=True))
    assert outcome.results["finetune"].skipped and not outcome.results["device"].skipped
    report = json.loads((tmp_path / "run" / layout.REPORT_JSON).read_text())
    measured = report["on_device"]
    shipped = report["deployed_artifact"]
    assert measured["ssh"] == "root@127.0.0.1" and measured["artifacts"][shipped]["passed"]
    assert measured["artifacts"][shipped]["p50_ms"] > 0 and measured["machine"]["cpu"]
    assert (tmp_path / "run" / layout.DEVICE_DIR / layout.BUNDLE_BENCH_JSON).is_file()
    markdown = (tmp_path / "run" / layout.REPORT_MD).read_text()
    assert "## Measured on the device: `root@127.0.0.1`" in markdown and "the build machine's" in markdown
    again = build(write_profile(tmp_path / "p.yaml", profile), log=Log(quiet=True))
    assert again.results["device"].skipped, "an unchanged bundle is not measured again"

    # A device that does not answer fails the build in one line naming the profile, and the run stays as it was.
    before = (tmp_path / "run" / layout.REPORT_JSON).read_bytes()
    on_device["ssh_options"] = [o for o in ssh_options if not o.startswith("Port=")] + [f"Port={_free_port()}"]
    unreachable = tiny_profile(data_root(built_run.run_dir), tmp_path / "run", on_device=on_device)
    from edgetl.errors import UserInputError

    with pytest.raises(UserInputError, match=r"p\.yaml: on_device: ssh root@127\.0\.0\.1: .*refused"):
        build(write_profile(tmp_path / "p.yaml", unreachable), log=Log(quiet=True))
    assert (tmp_path / "run" / layout.REPORT_JSON).read_bytes() == before
