"""Shared by the benchmark scripts: every result is written as JSON (for tools) and Markdown (for people)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def write_results(out: Path, result: dict, render: Callable[[dict], str]) -> None:
    """Write `out`.json and `out`.md and print the Markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render(result).rstrip("\n") + "\n"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)
