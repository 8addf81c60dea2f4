"""Issue 15's figures: the Node.js client (examples/node) against edgetl on the quickstart bundle.

    EDGETL_DATA_HOME=../shared/datasets python benchmarks/node_client.py [--run-dir runs/quickstart]

Needs `node` and `examples/node/node_modules` (`ONNXRUNTIME_NODE_INSTALL=skip npm ci` there).
Builds `profiles/quickstart.yaml` (stages already up to date are skipped) and, from a copy of its run
directory, the same model shipped as fp32 (`optimize.int8.enabled: false`; only the later stages
run). For each bundle (int8 and fp32):

1. `node check.mjs`: the client's preprocessing of the reference images against
   `reference/inputs.npy`, and onnxruntime-node on those inputs against `reference/logits.npy`,
   judged by `edgetl bundle verify`'s code with the bundle's own tolerances;
2. `node classify.mjs` on every hymenoptera val image against `edgetl predict` (top-1 agreement,
   max |probability difference|);
3. the same on a **hard copy of val**: every image re-saved with an EXIF orientation (2-8, the
   pixels stored transposed so that it displays as the original) and/or converted into an Adobe
   RGB-like wide-gamut ICC profile embedded in the file (the colours display as the original);
   agreement with `edgetl predict` on those files, and with its predictions on the originals;
4. the naive client: decoded pixels handed to `model_pixels.onnx` (`classify.mjs --pixels`), both
   sets.

Writes `benchmarks/results/node_client.{json,md}` (CPU named).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageCms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import write_results  # noqa: E402
from edgetl.console import Log  # noqa: E402
from edgetl.data.split import read_split  # noqa: E402
from edgetl.machine import describe_machine, package_versions  # noqa: E402
from edgetl.pipeline import build  # noqa: E402
from edgetl.port_check import verify_port  # noqa: E402
from edgetl.runtime import load  # noqa: E402
from tests.helpers import EXIF_STORED, WIDE_GAMUT_PRIMARIES, matrix_icc_profile  # noqa: E402

NODE = REPO / "examples" / "node"


def node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", *args], cwd=NODE, capture_output=True, text=True, timeout=1800)


def hard_copy(images: list[Path], folder: Path) -> tuple[list[Path], dict[str, int]]:
    """Each val image re-saved so that it *displays* as the original: EXIF-rotated, wide-gamut ICC, or both."""
    wide = matrix_icc_profile(WIDE_GAMUT_PRIMARIES, 2.2, "edgetl benchmark wide gamut (Adobe RGB-like)")
    to_wide = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(io.BytesIO(wide)), "RGB", "RGB"
    )
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"exif": 0, "icc": 0, "exif_and_icc": 0}
    out = []
    for index, path in enumerate(images):
        with Image.open(path) as opened:
            shown = opened.convert("RGB")
        kind = ("exif", "icc", "exif_and_icc")[index % 3]
        counts[kind] += 1
        stored = ImageCms.applyTransform(shown, to_wide) if kind != "exif" else shown
        kwargs: dict[str, Any] = {"quality": 95}
        if kind != "exif":
            kwargs["icc_profile"] = wide
        if kind != "icc":
            orientation = 2 + index % 7
            for step in EXIF_STORED[orientation]:
                stored = stored.transpose(step)
            exif = Image.Exif()
            exif[0x0112] = orientation
            kwargs["exif"] = exif.tobytes()
        target = folder / f"{index:03d}-{kind}-{path.stem}.jpg"
        stored.save(target, "JPEG", **kwargs)
        out.append(target)
    return out, counts


def edgetl_predictions(bundle: Path, images: list[Path]) -> list[tuple[int, float]]:
    """edgetl predict (the Python runtime) on `images`: top-1 index and its probability."""
    predictor = load(bundle)
    try:
        results = predictor.predict(images, top_k=1)
    finally:
        predictor.close()
    return [(r[0].index, r[0].score) for r in results]


def node_predictions(bundle: Path, images: list[Path], pixels: bool = False) -> list[tuple[int, float]]:
    done = node("classify.mjs", str(bundle), *map(str, images), "--json", *(["--pixels"] if pixels else []))
    if done.returncode != 0:
        raise SystemExit(f"node classify.mjs failed: {done.stderr.strip()}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return [(row["top"][0]["index"], row["top"][0]["probability"]) for row in rows]


def agreement(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> dict[str, Any]:
    same = [x[0] == y[0] for x, y in zip(a, b, strict=True)]
    both = [abs(x[1] - y[1]) for x, y in zip(a, b, strict=True) if x[0] == y[0]]
    return {
        "agree": int(sum(same)),
        "images": len(same),
        "max_abs_probability_diff": float(max(both)) if both else None,
    }


def check_bundle(bundle: Path, val: list[Path], hard: list[Path], port: Path) -> dict[str, Any]:
    done = node("check.mjs", str(bundle), "--out", str(port))
    verified = verify_port(bundle, inputs=port / "inputs.npy", logits=port / "logits.npy")
    e2e = verify_port(bundle, logits=port / "e2e_logits.npy", logits_from="own-inputs")
    reference = json.loads((bundle / "reference" / "reference.json").read_text())
    python_val = edgetl_predictions(bundle, val)
    python_hard = edgetl_predictions(bundle, hard)
    result: dict[str, Any] = {
        "artifact": json.loads((bundle / "bundle.json").read_text())["model"]["artifact"],
        "check_mjs": {"exit": done.returncode, "output": done.stdout.strip().splitlines()},
        "tolerances": reference["tolerances"],
        "reference_inputs": verified["inputs"],
        "reference_logits": verified["logits"],
        "end_to_end_logits": e2e["logits"],
        "val": agreement(node_predictions(bundle, val), python_val),
        "hard_copy": agreement(node_predictions(bundle, hard), python_hard),
        "hard_copy_python_vs_originals": agreement(python_hard, python_val),
    }
    if (bundle / "model_pixels.onnx").is_file():
        result["pixels_val"] = agreement(node_predictions(bundle, val, pixels=True), python_val)
        result["pixels_hard_copy"] = agreement(node_predictions(bundle, hard, pixels=True), python_hard)
    return result


def fp32_run(run_dir: Path, work: Path) -> Path:
    """The same build shipping onnx_fp32: a copy of the run directory (its stage cache reused)."""
    copy = work / "fp32"
    shutil.copytree(run_dir, copy, symlinks=True)
    profile = yaml.safe_load((run_dir / "profile.yaml").read_text())
    profile["output_dir"] = str(copy)
    profile.setdefault("optimize", {}).setdefault("int8", {})["enabled"] = False
    profile["budgets"] = {}
    path = work / "fp32.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return build(path, log=Log(quiet=True)).run_dir


def render(result: dict[str, Any]) -> str:
    lines = [
        "# Node.js client vs edgetl",
        "",
        f"CPU: {result['machine']['cpu']}; node {result['node']}; onnxruntime-node "
        f"{result['onnxruntime_node']}; sharp {result['sharp']}; onnxruntime (Python) "
        f"{result['packages'].get('onnxruntime')}. Hard copy of val: {result['hard_copy_kinds']}.",
        "",
        "| check | int8 bundle | fp32 bundle |",
        "|---|---|---|",
    ]
    b = result["bundles"]

    def both(fn: Any) -> str:
        return " | ".join(fn(b[k]) if k in b else "-" for k in ("int8", "fp32"))

    def agree(key: str) -> Any:
        def cell(r: dict[str, Any]) -> str:
            if key not in r:
                return "-"
            a = r[key]
            probability = a["max_abs_probability_diff"]
            tail = f", max prob. diff {probability:.2g}" if probability is not None else ""
            return f"{a['agree']}/{a['images']}{tail}"

        return cell

    def inputs(r: dict[str, Any]) -> str:
        i = r["reference_inputs"]
        return (
            f"max {i['max_pixel_levels']:g} pixel levels ({i['values_differing']:,} of {i['values']:,} values "
            f"differ; tolerance {i['tolerance']:.3g}): {'ok' if i['passed'] else 'FAIL'}"
        )

    def logits(r: dict[str, Any]) -> str:
        g = r["reference_logits"]
        return (
            f"max {g['max_abs']:.2g} (tolerance {g['tolerance']:.3g}), top-1 {g['top1_agreement']:.0f}%: "
            f"{'ok' if g['passed'] else 'FAIL'}"
        )

    def e2e(r: dict[str, Any]) -> str:
        g = r["end_to_end_logits"]
        return f"max {g['max_abs']:.2g}, top-1 {g['top1_agreement']:.0f}%"

    rows = [
        ("Node preprocessing vs `reference/inputs.npy` (32 images)", inputs),
        ("onnxruntime-node on `inputs.npy` vs `logits.npy`", logits),
        ("end to end (Node preprocessing + model) vs `logits.npy`", e2e),
        ("Node vs `edgetl predict`, 153 val images (top-1)", agree("val")),
        ("Node vs `edgetl predict`, hard copy (EXIF / wide-gamut ICC)", agree("hard_copy")),
        ("`edgetl predict`: hard copy vs the originals", agree("hard_copy_python_vs_originals")),
        ("naive client, pixels into `model_pixels.onnx`, 153 val vs `edgetl predict`", agree("pixels_val")),
        ("naive client, pixels into `model_pixels.onnx`, hard copy", agree("pixels_hard_copy")),
    ]
    lines += [f"| {name} | {both(fn)} |" for name, fn in rows]
    pixels = result.get("in_graph_measured")
    if pixels:
        latency = pixels["latency"]
        lines += [
            "",
            f"In-graph preprocessing (package stage, int8 bundle, {pixels['images']} val images): top-1 agreement "
            f"with the PIL path {pixels['agreement']}/{pixels['images']}, max |logit diff| "
            f"{pixels['max_abs_logit_diff']:.3g}; {latency['pixels_model_ms']:.2f} ms vs {latency['model_ms']:.2f} ms "
            f"for the model alone (+{latency['added_ms']:.2f} ms; the Python preprocessing it replaces: "
            f"{latency['python_preprocessing_ms']:.2f} ms), {latency['method']}, {latency['threads']} thread(s).",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, default=REPO / "profiles" / "quickstart.yaml")
    parser.add_argument("--run-dir", type=Path, default=None, help="default: the profile's output_dir")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "node_client")
    args = parser.parse_args()
    if not (NODE / "node_modules").is_dir():
        raise SystemExit(f"{NODE}/node_modules missing: run `ONNXRUNTIME_NODE_INSTALL=skip npm ci` there first")

    run_dir = build(args.profile, output_dir=args.run_dir, log=Log()).run_dir
    split = read_split(run_dir / "data" / "split.json")
    val, _ = split.paths("val")
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        hard, kinds = hard_copy(val, work / "hard")
        bundles = {"int8": run_dir / "bundle", "fp32": fp32_run(run_dir, work) / "bundle"}
        results = {k: check_bundle(b, val, hard, work / f"port-{k}") for k, b in bundles.items()}
    package = json.loads((run_dir / "manifest.json").read_text())["stages"]["package"]["summary"]
    versions = json.loads((NODE / "package.json").read_text())["dependencies"]
    result = {
        "machine": describe_machine(),
        "packages": package_versions("onnxruntime", "pillow", "numpy"),
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
        "onnxruntime_node": versions["onnxruntime-node"],
        "sharp": versions["sharp"],
        "hard_copy_kinds": kinds,
        "bundles": results,
        "in_graph_measured": (package.get("pixels_model") or {}).get("measured"),
    }
    write_results(args.out, result, render)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
