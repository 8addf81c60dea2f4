"""Build a 10-class image folder from scikit-learn's bundled handwritten digits (offline, no download).

    pip install scikit-learn && python benchmarks/make_digits.py [--out data/digits]

1,797 real 8x8 grey scans of handwritten digits (UCI ML hand-written digits, shipped inside
scikit-learn) upscaled to 64x64 PNG, split 80/20 per class with a fixed seed into
`train/<digit>/` and `val/<digit>/`. Far from ImageNet in domain and resolution, so it tests
int8 and the statistics on a multi-class problem that transfer learning does not find easy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data" / "digits")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("make_digits.py needs scikit-learn: pip install scikit-learn") from None

    digits = load_digits()
    rng = np.random.default_rng(args.seed)
    counts = {"train": 0, "val": 0}
    for label in range(10):
        indices = np.flatnonzero(digits.target == label)
        rng.shuffle(indices)
        n_val = round(len(indices) * args.val_fraction)
        for position, index in enumerate(indices):
            split = "val" if position < n_val else "train"
            folder = args.out / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[index] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            Image.fromarray(255 - pixels, mode="L").resize((64, 64), Image.BILINEAR).save(folder / f"{index:04d}.png")
            counts[split] += 1
    print(f"{args.out}: {counts['train']} train, {counts['val']} val images in 10 classes")


if __name__ == "__main__":
    main()
