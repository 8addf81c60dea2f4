"""Where build progress goes: stderr, so stdout carries only the result table."""

from __future__ import annotations

import sys

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
