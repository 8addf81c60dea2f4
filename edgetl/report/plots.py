"""Plots next to report.md: the accuracy/latency/size trade-off and latency distributions.

matplotlib is imported inside the functions (Agg backend, no display needed), so importing this
module is cheap and a runtime-only install without matplotlib fails only when plotting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    """Write the PNG under a temporary name, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    figure.savefig(temp, format="png", dpi=110, bbox_inches="tight")
    os.replace(temp, path)
    return path


def plot_tradeoff(report: dict[str, Any], path: Path) -> Path:
    """One point per artefact: p50 latency (x, p10-p90 bar) vs top-1 (y); marker area ~ file size."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    try:
        largest = max(a["size_bytes"] for a in report["artifacts"].values()) or 1
        for name, a in report["artifacts"].items():
            lat = a["latency_ms"]
            samples = lat.get("samples") or []
            if samples:
                import numpy as np

                low, high = (float(v) for v in np.percentile(samples, [10, 90]))
            else:
                low, high = lat["p50"], lat["p90"]
            deployed = name == report.get("deployed_artifact")
            x, y = lat["p50"], a["accuracy"] * 100
            axes.errorbar(x, y, xerr=[[max(0.0, x - low)], [max(0.0, high - x)]], fmt="none", ecolor="grey", capsize=3)
            axes.scatter(
                [x],
                [y],
                s=80 + 1400 * a["size_bytes"] / largest,
                alpha=0.6,
                edgecolors="black" if deployed else "none",
                linewidths=2 if deployed else 0,
                label=name,
            )
            axes.annotate(
                f"{name}{' (deployed)' if deployed else ''}\n{a['size_bytes'] / 1e6:.1f} MB",
                (x, y),
                textcoords="offset points",
                xytext=(8, 8),
                fontsize=8,
            )
        axes.set_xlabel("latency p50, batch 1 (ms); bar: p10 to p90")
        axes.set_ylabel("top-1 accuracy (%)")
        axes.set_title(
            f"{report.get('profile', '')}: {report['eval']['images']} {report['eval'].get('split', 'eval')} images; "
            "marker area ~ file size",
            fontsize=10,
        )
        axes.grid(alpha=0.3)
        axes.margins(x=0.25, y=0.25)
        return _save(figure, path)
    finally:
        plt.close(figure)


def plot_latency_distribution(report: dict[str, Any], path: Path) -> Path | None:
    """Box plot of every timed run per artefact; None when the report has no raw samples."""
    names = [n for n, a in report["artifacts"].items() if a["latency_ms"].get("samples")]
    if not names:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4))
    try:
        data = [report["artifacts"][n]["latency_ms"]["samples"] for n in names]
        axes.boxplot(data, showfliers=True)
        axes.set_xticks(range(1, len(names) + 1), names)
        smallest = min(min(d) for d in data)
        if smallest > 0 and max(max(d) for d in data) / smallest > 10:
            axes.set_yscale("log")
        for index, name in enumerate(names, start=1):
            lat = report["artifacts"][name]["latency_ms"]
            axes.annotate(
                f"p50 {lat['p50']:.2f}\np99 {lat['p99']:.2f}",
                (index, lat["p99"]),
                textcoords="offset points",
                xytext=(12, 0),
                fontsize=8,
            )
        axes.set_ylabel("latency per run (ms), batch 1")
        axes.set_title(f"{report.get('profile', '')}: latency of every timed run", fontsize=10)
        axes.grid(alpha=0.3, axis="y")
        return _save(figure, path)
    finally:
        plt.close(figure)


def write_plots(report: dict[str, Any], folder: Path) -> dict[str, str]:
    """Write tradeoff.png and latency.png into `folder`; return plot name -> file name written."""
    folder = Path(folder)
    written = {"tradeoff": plot_tradeoff(report, folder / "tradeoff.png").name}
    latency = plot_latency_distribution(report, folder / "latency.png")
    if latency is not None:
        written["latency"] = latency.name
    return written
