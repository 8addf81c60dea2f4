"""A bundle on emulated arm64 against the same bundle on this x86 machine, on every val image of its run.

    bash tests/arm64/make_root.sh            # once: prints the root's path
    python benchmarks/arm64_check.py RUN_DIR --root ROOT

Runs `edgetl bundle verify` (this machine's runtime as the port) and `edgetl predict --format jsonl`
on every val image of the run, on arm64 (qemu-user, Cortex-A76, Debian 12 Python 3.11, the aarch64
wheels a Pi installs) and here, and compares labels and scores image by image; every disagreement is
listed with its top-1 margin on both sides. Correctness only: emulated time is not latency, and none
is reported. Writes `benchmarks/results/arm64_<run name>.{json,md}`, naming this machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import write_results  # noqa: E402
from benchmarks.suite import cpu_label  # noqa: E402
from edgetl.machine import describe_machine  # noqa: E402
from tests.arm64.emulation import CPU, Arm64, arm64_python  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def _val_images(run: Path) -> list[Path]:
    from edgetl import layout
    from edgetl.data.split import read_split

    return read_split(run / layout.SPLIT).paths("val")[0]


def _predict(command: list[str]) -> list[dict[str, Any]]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])}...: {done.stderr.strip()[-500:]}")
    return [json.loads(line) for line in done.stdout.splitlines()]


def check(run: Path, arm64: Arm64) -> dict[str, Any]:
    bundle = run / "bundle"
    images = _val_images(run)
    with tempfile.TemporaryDirectory() as scratch:
        verified = arm64.edgetl(["bundle", "verify", str(bundle), "--json", f"{scratch}/verify.json"])
        verify = json.loads(Path(f"{scratch}/verify.json").read_text()) if verified.returncode in (0, 4) else None
    args = ["predict", str(bundle), *map(str, images), "--format", "jsonl", "--top-k", "2"]
    here = _predict([sys.executable, "-m", "edgetl", *args])
    there_done = arm64.edgetl(args, timeout=3600)
    if there_done.returncode != 0:
        raise SystemExit(f"arm64 predict failed: {there_done.stderr.strip()[-500:]}")
    there = [json.loads(line) for line in there_done.stdout.splitlines()]
    disagreements, worst = [], 0.0
    for x86, arm, image in zip(here, there, images, strict=True):
        scores_x86 = {p["label"]: p["score"] for p in x86["predictions"]}
        scores_arm = {p["label"]: p["score"] for p in arm["predictions"]}
        for label in scores_x86.keys() & scores_arm.keys():
            worst = max(worst, abs(scores_x86[label] - scores_arm[label]))
        if x86["predictions"][0]["label"] != arm["predictions"][0]["label"]:
            margin = [round(r["predictions"][0]["score"] - r["predictions"][1]["score"], 4) for r in (x86, arm)]
            disagreements.append({"image": str(image), "x86": x86["predictions"], "arm64": arm["predictions"],
                                  "top1_margin_x86_arm64": margin})  # fmt: skip
    info = json.loads((bundle / "bundle.json").read_text())
    qemu = subprocess.run([str(arm64.qemu), "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {
        "run": str(run),
        "target": info["target"]["name"],
        "artifact": info["model"]["artifact"],
        "images": len(images),
        "label_agreement": len(images) - len(disagreements),
        "max_score_difference": worst,
        "disagreements": disagreements,
        "bundle_verify": verify,
        "emulation": f"{qemu}, -cpu {CPU}, Debian 12 arm64 Python 3.11",
        "machine": describe_machine(),
    }


def render(result: dict[str, Any]) -> str:
    verify = result["bundle_verify"] or {}
    logits = verify.get("logits", {})
    inputs = verify.get("inputs", {})
    lines = [
        f"# {result['target']} bundle ({result['artifact']}) on emulated arm64 vs x86",
        "",
        f"Host: {cpu_label(result['machine'])}. Emulation: {result['emulation']}. Correctness only: no timing.",
        "",
        f"- val images: {result['images']}; same top-1 label on **{result['label_agreement']}/{result['images']}**; "
        f"largest class-score difference {result['max_score_difference']:.3g}",
        f"- `edgetl bundle verify` on arm64: inputs {inputs.get('values_differing', '?')} values differ "
        f"(max {inputs.get('max_pixel_levels', '?')} pixel levels); "
        f"logits max |diff| {logits.get('max_abs', float('nan')):.3g} "
        f"(bundle tolerance {logits.get('tolerance', float('nan')):.3g}); "
        f"{'passed' if verify.get('passed') else 'FAILED'}",
    ]
    for d in result["disagreements"]:
        lines.append(f"- disagreement: `{d['image']}`, top-1 margins x86/arm64 {d['top1_margin_x86_arm64']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="run directory of a finished build (its bundle/ and val split)")
    parser.add_argument("--root", type=Path, required=True, help="the arm64 root tests/arm64/make_root.sh made")
    args = parser.parse_args(argv)
    if not (args.root / ".edgetl-recipe").is_file():
        raise SystemExit(f"{args.root}: not an arm64 root; run `bash tests/arm64/make_root.sh {args.root}` first")
    import os

    os.environ["EDGETL_ARM64_ROOT"] = str(args.root)
    with tempfile.TemporaryDirectory() as work:
        result = check(args.run.resolve(), arm64_python(Path(work)))
        write_results(RESULTS / f"arm64_{args.run.resolve().name}", result, render)
    return 0 if result["label_agreement"] == result["images"] and (result["bundle_verify"] or {}).get("passed") else 1


if __name__ == "__main__":
    raise SystemExit(main())
