"""Image preprocessing that travels with the model.

One implementation (PIL + numpy, no torch) serves evaluation during training, calibration,
benchmarking and the on-device runtime, so the numbers in a report are produced by exactly the
preprocessing a device will run. Its parameters are stored in `preprocessing.json` and in the
ONNX metadata of every exported model.

The pipeline is the classic ImageNet evaluation transform:
    decode -> RGB -> resize shorter side to `resize` -> center crop `crop` x `crop`
    -> x = (pixel / 255 - mean) / std -> CHW float32
It reproduces torchvision's `Resize(resize) + CenterCrop(crop) + ToTensor() + Normalize(mean, std)`
on PIL images bit for bit (a test checks this).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps

from edgetl.errors import ModelFileError

Interpolation = Literal["bilinear", "bicubic", "nearest"]

_PIL_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}

PREPROCESSING_SCHEMA = "edgetl.preprocessing/1"

# Where transparent pixels end up: composited on white, like a browser shows them.
_ALPHA_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Preprocessing:
    """Parameters of the evaluation transform; `mean`/`std` are on the 0..1 pixel scale."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Interpolation = "bilinear"
    # Fixed conventions, recorded so a C++ loader does not have to guess them.
    color_order: str = field(default="RGB")
    layout: str = field(default="NCHW")

    def __post_init__(self) -> None:
        if self.resize < self.crop:
            raise ValueError(f"resize ({self.resize}) must be >= crop ({self.crop})")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.crop, self.crop)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        data["schema"] = PREPROCESSING_SCHEMA
        data["formula"] = (
            "resize shorter side to `resize` (PIL, `interpolation`), center crop `crop`, "
            "x = (pixel/255 - mean) / std per RGB channel, CHW float32"
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            interpolation=data.get("interpolation", "bilinear"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    # -- the transform -----------------------------------------------------------------

    def resize_and_crop(self, image: Image.Image) -> Image.Image:
        """Resize the shorter side to `resize` then center-crop, as torchvision does."""
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize, int(self.resize * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), _PIL_RESAMPLE[self.interpolation])
        top = int(round((new_h - self.crop) / 2.0))
        left = int(round((new_w - self.crop) / 2.0))
        return image.crop((left, top, left + self.crop, top + self.crop))

    def normalize(self, image: Image.Image) -> np.ndarray:
        array = np.asarray(image, dtype=np.float32) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((array - mean) / std).transpose(2, 0, 1))

    def __call__(self, image: Image.Image) -> np.ndarray:
        """PIL image (any mode) -> normalized CHW float32 array."""
        return self.normalize(self.resize_and_crop(to_rgb(image)))

    def load(self, path: str | Path) -> np.ndarray:
        return self(load_image(path))

    def batch(self, paths: list[Path]) -> np.ndarray:
        return np.stack([self.load(p) for p in paths]) if paths else np.zeros((0, *self.input_shape), np.float32)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any decodable PIL image to 8-bit RGB without surprises.

    Handles palette images, alpha (composited on white), 16-bit and 32-bit grayscale (scaled, not
    clipped to white as a plain `convert("RGB")` would), CMYK and grayscale.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(array.min(initial=0.0)), float(array.max(initial=1.0))
        scaled = (array - lo) / (hi - lo or 1.0) * 255.0
        return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Decode an image file fully, apply its EXIF orientation, and return RGB.

    Raises the underlying PIL/OSError for unreadable files; callers that scan datasets turn that
    into a reported, skipped file.
    """
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image) or image
        return to_rgb(image)


def read_preprocessing(path: str | Path) -> Preprocessing:
    """Read a `preprocessing.json`; a missing or damaged file is a one-line ModelFileError, not a KeyError."""
    path = Path(path)
    try:
        return Preprocessing.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing; the model cannot be run without its preprocessing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path}: unreadable ({error})") from None
    except KeyError as error:
        raise ModelFileError(f"{path}: not an edgetl preprocessing file (no {error.args[0]!r} field)") from None
    except (TypeError, ValueError, AttributeError) as error:
        raise ModelFileError(f"{path}: invalid preprocessing ({error})") from None
