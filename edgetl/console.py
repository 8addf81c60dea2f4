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
def native_output_captured(keep_bytes: int = 20_000) -> Iterator[None]:
    """Route file descriptor 2 to a temporary file while a converter or a runtime loads a model.

    TensorFlow Lite, absl, oneDNN and XNNPACK log from C++ straight to fd 2, past `sys.stderr` and
    `--quiet` ("Created TensorFlow Lite XNNPACK delegate", "oneDNN custom operations are on", ...).
    What they said is dropped when the block succeeds and printed when it raises, so a failure still
    shows the library's own words (a hard crash of the process loses it). Without a usable fd 2 the
    block runs uncaptured; other threads' stderr is captured too while it runs.
    """
    with _NATIVE_CAPTURE:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # fd 2 closed, or stderr detached: nothing to keep quiet
            yield
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            failed = True
            try:
                yield
                failed = False
            finally:
                with contextlib.suppress(ValueError, OSError, AttributeError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                if failed:
                    size = sink.seek(0, os.SEEK_END)
                    sink.seek(max(0, size - keep_bytes))
                    said = sink.read().decode("utf-8", errors="replace")
                    if said.strip() and sys.stderr is not None:
                        sys.stderr.write(said if said.endswith("\n") else said + "\n")
