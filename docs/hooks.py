"""MkDocs hooks: publish benchmarks/results/ (measurement logs, kept beside the benchmarks) inside the site.

The Markdown tables and plots there are written by the benchmark scripts; pages link them as
`benchmarks/results/<name>.md` (relative to the docs folder), and `mkdocs build --strict` checks those links.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
PUBLISHED = {".md", ".png"}


def on_files(files: Files, config: Any) -> Files:
    for path in sorted(RESULTS.iterdir()):
        if path.suffix in PUBLISHED and path.is_file():
            files.append(
                File(
                    f"benchmarks/results/{path.name}",
                    src_dir=str(RESULTS.parents[1]),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
    return files
