"""Peak memory of `edgetl predict` over many real images: it must stay bounded however many there are.

    python benchmarks/predict_memory.py --run runs/suite/hymenoptera [--images 2000] [--batch-size 32 1 300]

Takes the first `--images` image files under the data home (`../shared/datasets`, sorted by path, so several
datasets and sizes; cycled if there are fewer), links them into one folder, and runs
`edgetl predict RUN FOLDER --format jsonl` in a fresh process per batch size. The figure is the process's own
peak resident memory (VmHWM from /proc, Linux), and the rows predicted are counted. Writes
`benchmarks/results/predict_memory.{json,md}`, naming the CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._results import write_results  # noqa: E402
from edgetl.machine import describe_machine  # noqa: E402
from edgetl.profile import IMAGE_EXTENSIONS  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
# The child prints its own peak RSS last: VmHWM belongs to its memory map (ru_maxrss would survive exec and
# report the parent's).
PEAK_RSS = """
import sys
from edgetl.cli import main
try:
    main(sys.argv[1:])
finally:
    print("peak_rss_kib", open("/proc/self/status").read().split("VmHWM:")[1].split()[0], file=sys.stderr)
"""


def real_images(data_home: Path, count: int) -> list[Path]:
    found = sorted(
        p for p in data_home.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and "/." not in str(p)
    )
    if not found:
        raise SystemExit(f"predict_memory: no images under {data_home}")
    return [found[i % len(found)] for i in range(count)]


def measure(run: Path, folder: Path, batch_size: int) -> dict[str, Any]:
    command = ["predict", str(run), str(folder), "--format", "jsonl", "--batch-size", str(batch_size)]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGETL_OFFLINE": "1"},
    )
    seconds = time.perf_counter() - started
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    peak_kib = int(last.split()[-1]) if last.startswith("peak_rss_kib") else None
    return {
        "batch_size": batch_size,
        "exit_code": done.returncode,
        "rows": len(done.stdout.splitlines()),
        "peak_rss_mb": None if peak_kib is None else round(peak_kib / 1024, 1),
        "seconds": round(seconds, 1),
        "error": None if done.returncode == 0 else done.stderr.strip().splitlines()[-2:],
    }


def render(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        "# `edgetl predict`: peak memory over many real images",
        "",
        f"Machine: {machine['cpu']}, {machine['usable_cpus']} CPUs. Run: `{result['run']}` (deployed "
        f"`{result['artifact']}`). {result['images']} real images, the first under `{result['data_home']}` by path "
        f"({result['total_megapixels']:.0f} megapixels in all). Peak RSS is the predict process's own VmHWM.",
        "",
        "| batch size | images predicted | peak RSS | wall |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        peak = "-" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f} MB"
        lines.append(f"| {row['batch_size']} | {row['rows']} | {peak} | {row['seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run directory or bundle")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, nargs="*", default=[32])
    parser.add_argument(
        "--data-home", type=Path, default=Path(os.environ.get("EDGETL_DATA_HOME", REPO.parent / "shared" / "datasets"))
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "predict_memory")
    args = parser.parse_args(argv)
    from PIL import Image

    images = real_images(args.data_home, args.images)
    megapixels = 0.0
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "images"
        folder.mkdir()
        for i, source in enumerate(images):
            target = folder / f"{i:05d}{source.suffix.lower()}"
            os.symlink(source.resolve(), target)
            with Image.open(source) as image:
                megapixels += image.width * image.height / 1e6
        rows = [measure(args.run, folder, batch) for batch in args.batch_size]
    import json

    manifest = json.loads((args.run / "manifest.json").read_text()) if (args.run / "manifest.json").is_file() else {}
    result = {
        "machine": describe_machine(),
        "run": str(args.run),
        "artifact": manifest.get("deployed_artifact", "?"),
        "images": len(images),
        "total_megapixels": megapixels,
        "data_home": str(args.data_home),
        "rows": rows,
    }
    write_results(args.out, result, render)
    return 0 if all(r["exit_code"] == 0 and r["rows"] == len(images) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
