"""Image preprocessing that travels with the model.

One implementation (PIL + numpy, no torch) serves evaluation during training, calibration,
benchmarking and the on-device runtime, so the numbers in a report are produced by exactly the
preprocessing a device will run. Its parameters and every convention a port needs are stored in
`preprocessing.json` (schema 2: `contract` lists the steps in order, each with its arithmetic) and in
the ONNX metadata of every exported model.

The pipeline is the classic ImageNet evaluation transform:
    decode -> EXIF orientation -> embedded ICC profile to sRGB -> 8-bit RGB (alpha over white)
    -> resize shorter side to `resize` (PIL's antialiased filter) -> center crop `crop` x `crop`
    -> x = (float32(pixel) / 255 - mean) / std in float32 -> CHW
It reproduces torchvision's `Resize(resize) + CenterCrop(crop) + ToTensor() + Normalize(mean, std)`
on PIL images bit for bit (a test checks this). Schema 1 files (written before colour management
was stated) are still read: they mean "embedded profiles ignored", which is what those models saw.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageCms, ImageOps

from edgetl.errors import ModelFileError

Interpolation = Literal["bilinear", "bicubic", "nearest"]
# "srgb": an embedded ICC profile is converted to sRGB (what browsers, libvips/sharp and most image
# libraries do); "ignore": the pixel values are taken as they are (schema 1 models were built so).
ColorManagement = Literal["srgb", "ignore"]

_PIL_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
# PIL's filter for each interpolation, as a port has to implement it (see `contract`).
_FILTERS = {
    "bilinear": "triangle: w(t) = max(0, 1 - |t|), support 1",
    "bicubic": "Keys cubic with a = -0.5, support 2",
    "nearest": "nearest neighbour, no antialiasing",
}

PREPROCESSING_SCHEMA = "edgetl.preprocessing/2"
MAX_SIDE = 8192  # resize/crop beyond this is a damaged file, not a model input
_SCHEMA_V1 = "edgetl.preprocessing/1"

# Where transparent pixels end up: composited on white, like a browser shows them.
_ALPHA_BACKGROUND = (255, 255, 255)
_INTENT = ImageCms.Intent.PERCEPTUAL


@dataclass(frozen=True)
class Preprocessing:
    """Parameters of the evaluation transform; `mean`/`std` are on the 0..1 pixel scale."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Interpolation = "bilinear"
    color_management: ColorManagement = "srgb"
    # Fixed conventions, recorded so a C++ loader does not have to guess them.
    color_order: str = field(default="RGB")
    layout: str = field(default="NCHW")

    def __post_init__(self) -> None:
        if not 0 < self.crop <= MAX_SIDE or not 0 < self.resize <= MAX_SIDE:
            raise ValueError(f"resize ({self.resize}) and crop ({self.crop}) must be 1 to {MAX_SIDE} pixels")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got {len(self.mean)} and {len(self.std)}")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise ValueError("mean and std must be finite numbers (a NaN would make every prediction the same)")
        if self.resize < self.crop:
            raise ValueError(f"resize ({self.resize}) must be >= crop ({self.crop})")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        if self.interpolation not in _PIL_RESAMPLE:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {sorted(_PIL_RESAMPLE)}")
        if self.color_management not in ("srgb", "ignore"):
            raise ValueError(f"color_management {self.color_management!r} is not 'srgb' or 'ignore'")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.crop, self.crop)

    def pixel_step(self) -> float:
        """One 8-bit pixel level in the normalized input (the largest over the channels)."""
        return float(max(1.0 / (255.0 * s) for s in self.std))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        data["schema"] = PREPROCESSING_SCHEMA
        data["formula"] = (
            "resize shorter side to `resize` (PIL, `interpolation`, antialiased), center crop `crop`, "
            "x = (pixel/255 - mean) / std per RGB channel in float32, CHW"
        )
        data["contract"] = self.contract()
        return data

    def contract(self) -> list[dict[str, str]]:
        """Every step in order with its arithmetic: what a port (C++, JavaScript, Kotlin) implements."""
        colour = (
            "if the file embeds an ICC profile, convert the pixels from it to sRGB IEC 61966-2-1 "
            "(LittleCMS, perceptual intent, 8-bit in and out); no profile means sRGB; a profile that cannot be "
            "parsed or does not fit the pixel format is ignored. Browsers, libvips/sharp and Core Graphics do "
            "the same (within 1 level)"
            if self.color_management == "srgb"
            else "embedded ICC profiles are ignored: pixel values are used as decoded"
        )
        return [
            {"step": "decode", "rule": "decode the whole file to 8-bit samples (16-bit grayscale: see to_rgb)"},
            {
                "step": "orientation",
                "rule": "apply the EXIF Orientation tag (0x0112, values 2-8: flips/rotations) before anything else; "
                "no tag or 1 = as stored",
            },
            {"step": "color_management", "rule": colour},
            {
                "step": "to_rgb",
                "rule": "grayscale: R=G=B=L; palette: its RGB(A) entries; CMYK without a profile: "
                "R = round((255-C)(255-K)/255) per channel; alpha: composited over white, "
                "out = (c*a + 255*(255-a)) / 255 rounded; 16-bit grayscale: round(v/65535*255)",
            },
            {
                "step": "resize",
                "rule": f"scale so the shorter side is {self.resize}; the other side is floor({self.resize} * long / "
                f"short). Skip when the size is unchanged. Filter: {_FILTERS[self.interpolation]}, antialiased "
                "(PIL's Image.resize): along each axis, scale = in/out, the filter is stretched by max(1, scale); "
                "output pixel i has centre c = (i + 0.5) * scale, takes input pixels j from "
                "trunc(c - support*max(1,scale) + 0.5) (>= 0) to trunc(c + support*max(1,scale) + 0.5) (<= in, "
                "exclusive), weights w((j - c + 0.5) / max(1, scale)) normalised to sum 1, then each weight is "
                "fixed point: trunc(w * 2^22 + 0.5) (w < 0: trunc(w * 2^22 - 0.5)); "
                "sum = 2^21 + sum(pixel * weight), result = clamp(sum >> 22, 0, 255) as uint8. "
                "Horizontal pass first (8-bit result), then vertical",
            },
            {
                "step": "center_crop",
                "rule": f"{self.crop} x {self.crop}; left = round_half_to_even((width - {self.crop}) / 2), "
                f"top = round_half_to_even((height - {self.crop}) / 2)",
            },
            {
                "step": "normalize",
                "rule": "float32 throughout, in this order: x = float32(pixel) / 255; x = x - float32(mean[c]); "
                "x = x / float32(std[c]); each operation rounded to float32 (not float64 then cast)",
            },
            {"step": "layout", "rule": f"{self.color_order} channels, {self.layout} float32, batch first"},
        ]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        schema = data.get("schema", _SCHEMA_V1)
        if schema not in (_SCHEMA_V1, PREPROCESSING_SCHEMA):
            raise ValueError(f"schema {schema!r} is not one this edgetl reads ({_SCHEMA_V1}, {PREPROCESSING_SCHEMA})")
        return cls(
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            interpolation=data.get("interpolation", "bilinear"),
            # Schema 1 models were trained, calibrated and measured on pixels with profiles ignored.
            color_management="ignore" if schema == _SCHEMA_V1 else data["color_management"],
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
        # The contract's two passes, one call each: horizontal, then vertical. Given both sides at once,
        # Pillow 13 picks the order itself (vertical first for some tall images), which moves pixels by
        # one level from what earlier Pillow releases, and every port, compute.
        resample = _PIL_RESAMPLE[self.interpolation]
        if new_w != width:
            image = image.resize((new_w, height), resample)
        if new_h != height:
            image = image.resize((new_w, new_h), resample)
        top = int(round((new_h - self.crop) / 2.0))
        left = int(round((new_w - self.crop) / 2.0))
        return image.crop((left, top, left + self.crop, top + self.crop))

    def normalize(self, image: Image.Image) -> np.ndarray:
        array = np.asarray(image, dtype=np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((array - mean) / std).transpose(2, 0, 1))

    def __call__(self, image: Image.Image) -> np.ndarray:
        """Decoded PIL image (any mode) -> normalized CHW float32 array."""
        return self.normalize(self.resize_and_crop(to_rgb(image)))

    def decode(self, path: str | Path) -> Image.Image:
        """An image file as this model's pixels: oriented, colour-managed by its policy, 8-bit RGB."""
        return load_image(path, self.color_management)

    def load(self, path: str | Path) -> np.ndarray:
        return self(self.decode(path))

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


# PIL's own decompression-bomb threshold (~89 megapixels): above it PIL only warns (and errors at twice it);
# edgetl refuses with one line before decoding, so one image never costs gigabytes.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class TooManyPixels(ValueError):
    """An image over MAX_PIXELS: refused before it is decoded."""


def check_pixel_count(image: Image.Image) -> None:
    """Raise TooManyPixels for an image (opened, not yet decoded) with more than MAX_PIXELS pixels."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise TooManyPixels(
            f"{width}x{height} px is {width * height / 1e6:.0f} megapixels, over the limit of {MAX_PIXELS / 1e6:.0f} "
            "(downscale it first)"
        )


def load_image(path: str | Path, color_management: ColorManagement = "srgb") -> Image.Image:
    """Decode an image file fully, apply its EXIF orientation and colour policy, and return 8-bit RGB.

    Raises the underlying PIL/OSError for unreadable files; callers that scan datasets turn that
    into a reported, skipped file.
    """
    with Image.open(path) as image:
        check_pixel_count(image)
        image.load()
        image = ImageOps.exif_transpose(image) or image
        if color_management == "srgb":
            image = to_srgb(image)
        return to_rgb(image)


def to_srgb(image: Image.Image) -> Image.Image:
    """Convert pixels from the image's embedded ICC profile to sRGB; no profile (or an unusable one): unchanged."""
    embedded = image.info.get("icc_profile")
    if not embedded or image.mode not in ("RGB", "RGBA", "L", "LA", "CMYK"):
        return image
    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    base = image.convert(image.mode[0] if image.mode == "LA" else "RGB") if alpha is not None else image
    transform = _transform_to_srgb(embedded, base.mode)
    if transform is None:
        return image
    converted = ImageCms.applyTransform(base, transform)
    if converted is None:  # applyTransform(inPlace=False) always returns an image; keeps mypy exact
        return image
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


@lru_cache(maxsize=64)
def _transform_to_srgb(embedded: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """One LittleCMS transform per distinct embedded profile (datasets reuse a handful); None if unusable."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(embedded))
        return ImageCms.buildTransform(source, _srgb_profile(), mode, "RGB", renderingIntent=_INTENT)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


@lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


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
