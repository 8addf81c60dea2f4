"""Tiny generated image folders and profiles for fast tests (no downloads, no shared data)."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw

from edgetl.files import sha256_file
from edgetl.profile import deep_merge  # noqa: F401 - re-exported for the tests

# Class name -> dominant colour. Names deliberately match no ImageNet class.
CLASS_COLOURS = {"reds": (200, 40, 40), "blues": (40, 60, 200), "greens": (40, 170, 60)}
SHARED_HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hymenoptera"


def make_image(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (72, 56)) -> Image.Image:
    """A noisy image whose colour and stripe direction carry the class (stripes follow the colour)."""
    rng = random.Random(seed)
    base = tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in colour)
    image = Image.new("RGB", size, base)
    draw = ImageDraw.Draw(image)
    horizontal = colour[0] >= colour[2]  # reds: horizontal stripes, blues: vertical
    step = rng.randint(6, 10)
    dark = tuple(c // 3 for c in base)
    for offset in range(rng.randint(0, step), max(size), step):
        line = (0, offset, size[0], offset) if horizontal else (offset, 0, offset, size[1])
        draw.line(line, fill=dark, width=2)
    for _ in range(3):
        x, y = rng.randint(0, size[0]), rng.randint(0, size[1])
        w, h = rng.randint(4, 14), rng.randint(4, 14)
        draw.ellipse((x, y, x + w, y + h), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    return image


def make_image_folder(
    root: Path,
    per_class: dict[str, int],
    seed: int = 0,
    fmt: str = "JPEG",
) -> Path:
    """root/<class>/<n>.jpg for each class; returns root."""
    for label, count in per_class.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            suffix = ".jpg" if fmt == "JPEG" else ".png"
            image_seed = zlib.crc32(f"{label}/{i}/{seed}".encode())  # stable across processes, unlike hash()
            make_image(CLASS_COLOURS[label], seed=image_seed).save(folder / f"{i:03d}{suffix}", fmt)
    return root


def make_dataset(root: Path, train: int = 10, val: int = 4, classes: tuple[str, ...] = ("reds", "blues")) -> Path:
    make_image_folder(root / "train", {c: train for c in classes}, seed=1)
    make_image_folder(root / "val", {c: val for c in classes}, seed=2)
    return root


def add_messy_files(class_dir: Path) -> dict[str, str]:
    """Files a real dataset contains; returns name -> expected reason fragment."""
    (class_dir / "empty.jpg").write_bytes(b"")
    (class_dir / "truncated.jpg").write_bytes((class_dir.parent / class_dir.name / "000.jpg").read_bytes()[:300])
    (class_dir / "notes.txt").write_text("not an image")
    (class_dir / ".DS_Store").write_bytes(b"\x00\x01")
    (class_dir / "fake.png").write_bytes(b"this is not a png")
    placeholder = Image.new("RGB", (120, 120), (235, 235, 235))
    ImageDraw.Draw(placeholder).text((10, 50), "image not found", fill=(90, 90, 90))
    placeholder.convert("P").save(class_dir / "placeholder.gif")
    Image.new("RGB", (8, 8), (200, 40, 40)).save(class_dir / "tiny.png")
    return {
        "empty.jpg": "empty file",
        "truncated.jpg": "corrupt image",
        "notes.txt": "not an image type",
        ".DS_Store": "hidden file",
        "fake.png": "not a decodable image",
        "placeholder.gif": "placeholder",
        "tiny.png": "too small",
    }


def tiny_profile(data_root: Path, output_dir: Path, **overrides: object) -> dict:
    """A fast profile over a generated dataset: few epochs, few timing runs."""
    base = {
        "version": 1,
        "name": "tiny",
        "seed": 0,
        "output_dir": str(output_dir),
        "data": {"root": str(data_root), "holdout_fraction": 0.2},
        # 128 px, not Lite0's 224: a third of the pixels in every training step, calibration pass and timing
        # loop, and still a progressive-resizing schedule (96 px, then 128) for the training tests.
        "backbone": {"input_size": 128},
        "finetune": {
            "strategy": "feature_extract",
            "epochs": 3,
            "batch_size": 8,
            "lr": 0.01,
            "threads": 2,
            "early_stopping": {"patience": 2},
        },
        "export": {"parity_images": 4},
        # Bias correction and AdaRound run one inference per conv (~40 s here): the tests that need them turn them on.
        "optimize": {"int8": {"calibration_images": 8, "bias_correction": "off", "adaround": {"mode": "off"}}},
        "benchmark": {
            "warmup": 1,
            "iterations": 4,
            "rounds": 2,
            "throughput_batch_size": 4,
            "throughput_iterations": 2,
            "eval_batch_size": 8,
            "batch_sizes": [1, 4],
            # A fresh process per artefact for peak memory, and ONNX Runtime's GEMM peak, cost ~7 s a build:
            # the tests that check them (the intel-cpu and arm64 builds) turn them on.
            "memory": False,
            "compute_peak": False,
        },
    }
    return deep_merge(base, overrides)


def write_profile(path: Path, profile: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `edgetl ARGS` in process; (exit code, stdout, stderr)."""
    from edgetl.cli import main

    with pytest.raises(SystemExit) as done:
        main(args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


def published_hashes(run: Path) -> dict[str, str]:
    """SHA-256 of every file a build published into `run` (its `.edgetl` cache excluded)."""
    return {
        p.relative_to(run).as_posix(): sha256_file(p)
        for p in run.rglob("*")
        if p.is_file() and ".edgetl" not in p.parts
    }


def bundle_reference_check(bundle_dir: Path) -> dict:
    """Run a bundle's reference images through the bundle's own runtime; compare_with_reference's result."""
    from edgetl.bundle import compare_with_reference, read_bundle
    from edgetl.runtime import load

    bundle = read_bundle(bundle_dir)
    predictor = load(bundle.root)
    try:
        images = [bundle.root / item["file"] for item in bundle.reference()["images"]]
        logits = predictor.logits(bundle.preprocessing().batch(images))
    finally:
        predictor.close()
    return compare_with_reference(logits, bundle.reference(), min_agreement=100.0)


def matrix_icc_profile(primaries: tuple[tuple[float, float, float], ...], gamma: float, name: str) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC display profile, built here so tests need no third-party profile file.

    `primaries` are the red, green and blue colorants as D50 XYZ (the rXYZ/gXYZ/bXYZ tags); the tone
    curve is a pure gamma. Adobe RGB (1998)-like primaries make a wide-gamut profile whose pixels
    differ from sRGB by tens of levels, as real camera files do.
    """
    import struct

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)

    curve = b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", round(gamma * 256)) + b"\0\0"
    text = name.encode("ascii") + b"\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 2 + b"\0" + b"\0" * 67
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(*primaries[0])),
        (b"gXYZ", xyz(*primaries[1])),
        (b"bXYZ", xyz(*primaries[2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text" + b"\0" * 4 + b"public domain\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"none"
        + bytes([2, 0x10, 0, 0])
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)  # rendering intent: perceptual
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + b"\0" * 4
        + b"\0" * 16
        + b"\0" * 28
    )
    assert len(header) == 128, len(header)
    return header + struct.pack(">I", len(tags)) + table + data


# Adobe RGB (1998) colorants adapted to D50, gamma 2.2: a wide-gamut "camera" profile.
WIDE_GAMUT_PRIMARIES = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))


# EXIF orientation N -> the transposes that turn the displayed image into the stored one (a reader applies the inverse).
EXIF_STORED = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_90],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_270],
}


def assert_verified_bytes_run(run_dir: Path, name: str, tmp_path: Path) -> None:
    """The runner loads the verified bytes: the file swapped after the check changes nothing (LiteRT, ExecuTorch)."""
    import shutil

    import numpy as np

    from edgetl import layout
    from edgetl.backends import ARTIFACTS, backend_for
    from edgetl.data.split import read_split
    from edgetl.preprocessing import read_preprocessing

    source = run_dir / ARTIFACTS[name].file
    copy = tmp_path / source.name
    shutil.copyfile(source, copy)
    split = read_split(run_dir / layout.SPLIT)
    images = read_preprocessing(run_dir / layout.PREPROCESSING).batch(split.paths("val")[0][:2])
    with backend_for(name).make_runner(copy, name, 1) as runner:
        expected = runner.infer_any_batch(images)
    verified = {copy: copy.read_bytes()}
    copy.write_bytes(b"not a model")  # swapped after the check: the verified bytes still run
    with backend_for(name).make_runner(copy, name, 1, verified=verified) as runner:
        assert runner.loads_from_memory and np.array_equal(runner.infer_any_batch(images), expected)
