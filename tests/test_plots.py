"""Plots and the self-contained HTML report, on a hand-made report (no build needed)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from edgetl.report.html import render_html
from edgetl.report.plots import plot_latency_distribution, write_plots


def _report(samples: bool = True) -> dict:
    def artefact(accuracy: float, p50: float, size: int) -> dict:
        latency = {"batch": 1, "p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3}
        if samples:
            latency["samples"] = [p50 * (1 + 0.01 * i) for i in range(20)]
        return {"accuracy": accuracy, "size_bytes": size, "latency_ms": latency}

    return {
        "profile": "demo",
        "deployed_artifact": "onnx_int8",
        "eval": {"split": "val", "images": 153},
        "artifacts": {
            "torch_fp32": artefact(0.97, 30.0, 13_700_000),
            "onnx_fp32": artefact(0.97, 12.0, 13_600_000),
            "onnx_int8": artefact(0.96, 8.0, 3_900_000),
        },
    }


def test_plots_are_real_pngs(tmp_path: Path) -> None:
    written = write_plots(_report(), tmp_path / "plots")
    assert written == {"tradeoff": "tradeoff.png", "latency": "latency.png"}
    for name in written.values():
        with Image.open(tmp_path / "plots" / name) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert not list((tmp_path / "plots").glob(".*.tmp"))  # written atomically


def test_no_latency_samples_means_no_distribution_plot(tmp_path: Path) -> None:
    assert plot_latency_distribution(_report(samples=False), tmp_path / "latency.png") is None
    assert write_plots(_report(samples=False), tmp_path) == {"tradeoff": "tradeoff.png"}


def test_html_embeds_images_escapes_text_and_keeps_tables(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), "red").save(tmp_path / "dot.png")
    markdown = "\n".join(
        [
            "# report <script>alert(1)</script>",
            "",
            "Some **bold** and `code <b>`.",
            "",
            "| a | b |",
            "|---|---|",
            "| 1 | 2 |",
            "| 3 | 4 |",
            "",
            "- first",
            "- second",
            "",
            "![a dot](dot.png)",
            "![gone](missing.png)",
        ]
    )
    page = render_html(markdown, tmp_path)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<strong>bold</strong>" in page and "<code>code &lt;b&gt;</code>" in page
    assert page.count("<tr>") == 3 and "<th>a</th>" in page
    assert page.count("<li>") == 2
    assert page.count("data:image/png;base64,") == 1 and "<em>gone</em>" in page
