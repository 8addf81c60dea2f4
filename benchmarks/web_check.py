"""A web bundle's own page in headless Chromium: every val image against `edgetl predict`, and its latency.

    python benchmarks/web_check.py runs/web [--threads 1 2]

The same check the build's browser stage runs, with one difference: every ONNX model of the run is
timed in the page (fp32 and int8), whether or not it passed the profile's budgets, so the trade-off
between download size and speed in WebAssembly is on record. Latency is this machine's Chromium on
this machine's CPU (named in the result), not a phone's or a laptop's browser. Writes
`benchmarks/results/web_<run name>.{json,md}`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import write_results  # noqa: E402
from benchmarks.suite import cpu_label  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def check(run: Path, threads: list[int]) -> dict[str, Any]:
    from edgetl import layout
    from edgetl.backends import ARTIFACTS
    from edgetl.bundle import read_bundle
    from edgetl.data.split import read_split
    from edgetl.measure.browser import check_web_bundle, find_chromium

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no chromium on PATH (set EDGETL_CHROMIUM)")
    bundle = run / layout.BUNDLE_DIR
    shipped = read_bundle(bundle).info["model"]["artifact"]
    others = {
        name: run / item.file
        for name, item in ARTIFACTS.items()
        if item.format == "onnx" and name != shipped and (run / item.file).is_file()
    }
    paths, labels = read_split(run / layout.SPLIT).paths("val")
    result = check_web_bundle(bundle, paths, labels, chromium, alternatives=others, threads=threads, log=print)
    result.pop("per_image")
    return {"run": str(run), "shipped": shipped, **result}


def render(result: dict[str, Any]) -> str:
    lines = [
        f"# The {Path(result['run']).name} bundle's page in headless Chromium",
        "",
        f"Machine: {cpu_label(result['machine'])}; browser {result['browser']}, onnxruntime-web WebAssembly, "
        f"{'cross-origin isolated' if result['cross_origin_isolated'] else 'not isolated (1 thread)'}. "
        "This is the build machine's browser, not a user's device.",
        "",
        f"- val images: {result['images']}; the page's label equals `edgetl predict`'s on "
        f"**{result['agreement']}/{result['images']}**; max |logit diff| {result['max_abs_logit_diff']:.3g} "
        f"(in-graph resize vs PIL); correct {result['correct']} (predict: {result['predict_correct']})",
    ]
    for d in result["disagreements"]:
        lines.append(f"- disagreement: `{d['image']}`: page {d['page']} (margin {d['page_margin']}), "
                     f"predict {d['predict']} (margin {d['predict_margin']})")  # fmt: skip
    end = result["end_to_end"]
    lines += [
        f"- decode + classify one image in the page ({end['artifact']}, {end['threads']} thread(s)): "
        f"p50 {end['p50_ms']:.1f} ms",
        "",
        "| model | shipped | WASM threads | p50 ms | p90 ms | download |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["latency"]:
        lines.append(
            f"| {row['artifact']} | {'yes' if row['shipped'] else 'no'} | {row['threads']} | {row['p50_ms']:.2f} | "
            f"{row['p90_ms']:.2f} | {row['model_bytes'] / 1e6:.2f} MB |"
        )
    lines += ["", f"Method: {result['method']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="run directory of a finished web build")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="WASM thread counts to time")
    args = parser.parse_args(argv)
    result = check(args.run.resolve(), args.threads)
    write_results(RESULTS / f"web_{args.run.resolve().name}", result, render)
    return 0 if result["agreement"] == result["images"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
