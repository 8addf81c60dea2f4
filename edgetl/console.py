"""Where build progress goes: stderr, so stdout carries only the result table."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

from rich.console import Console


class Log:
    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)

    def __call__(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    def stage(self, name: str, message: str) -> None:
        if not self.quiet:
            self.console.print(f"[bold cyan]{name:>9}[/] {message}", markup=True)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}", markup=True)

    @property
    def progress_enabled(self) -> bool:
        return not self.quiet and sys.stderr.isatty()


_NATIVE_CAPTURE = threading.RLock()  # fd 2 is the process's: one capture at a time


@contextlib.contextmanager
def native_log(keep_bytes: int | None = None) -> Iterator[list[str]]:
    """Route file descriptor 2 to a temporary file while the block runs; yields its lines, filled on exit.

    TensorFlow Lite, absl, oneDNN, XNNPACK and ExecuTorch log from C++ straight to fd 2, past
    `sys.stderr` and `--quiet` ("Created TensorFlow Lite XNNPACK delegate", "oneDNN custom operations
    are on", cpuinfo probing, ...). `keep_bytes`: only the log's tail is read back. Without a usable
    fd 2 the block runs uncaptured (no lines); other threads' stderr is captured too while it runs.
    """
    lines: list[str] = []
    with _NATIVE_CAPTURE:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # fd 2 closed, or stderr detached: nothing to keep quiet
            yield lines
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                with contextlib.suppress(ValueError, OSError, AttributeError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                size = sink.seek(0, os.SEEK_END)
                sink.seek(0 if keep_bytes is None else max(0, size - keep_bytes))
                said = sink.read().decode("utf-8", errors="replace")
                lines.extend(line for line in said.splitlines() if line.strip())


@contextlib.contextmanager
def native_output_captured(keep_bytes: int = 20_000) -> Iterator[None]:
    """`native_log` around a converter or a runtime loading a model: dropped on success, printed if it raises.

    A failure still shows the library's own words (a hard crash of the process loses them).
    """
    said: list[str] = []
    try:
        with native_log(keep_bytes) as said:
            yield
    except BaseException:
        if said and sys.stderr is not None:
            sys.stderr.write("\n".join(said) + "\n")
        raise
