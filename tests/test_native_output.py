"""C++ libraries' logs on file descriptor 2 stay out of the build's output unless the call fails."""

from __future__ import annotations

import os

import pytest

from edgetl.console import native_output_captured


def test_native_output_is_dropped_on_success_and_shown_on_failure(capfd: pytest.CaptureFixture[str]) -> None:
    with native_output_captured():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"

    with pytest.raises(RuntimeError, match="conversion failed"):
        with native_output_captured():
            os.write(2, b"F0000 converter.cc:12] unsupported op: Foo")
            raise RuntimeError("conversion failed")
    assert capfd.readouterr().err == "F0000 converter.cc:12] unsupported op: Foo\n"


def test_without_a_usable_fd_2_the_block_just_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def closed(fd: int) -> int:
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(os, "dup", closed)
    ran = []
    with native_output_captured():
        ran.append(True)
    assert ran == [True]
