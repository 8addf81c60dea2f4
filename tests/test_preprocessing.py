from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edgetl.backbones import get_backbone
from edgetl.preprocessing import Preprocessing, load_image, to_rgb
from tests.helpers import make_image

LITE = get_backbone("efficientnet_lite0").pretrained.preprocessing


@pytest.mark.parametrize("size", [(72, 56), (300, 500), (640, 480), (224, 224), (257, 1000)])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_matches_torchvision_eval_transform(size: tuple[int, int], interpolation: str) -> None:
    """The runtime's numpy preprocessing is the torchvision transform the model was trained with."""
    from torchvision import transforms as T

    pre = Preprocessing(resize=256, crop=224, mean=LITE.mean, std=LITE.std, interpolation=interpolation)
    mode = T.InterpolationMode.BILINEAR if interpolation == "bilinear" else T.InterpolationMode.BICUBIC
    reference = T.Compose(
        [T.Resize(256, interpolation=mode), T.CenterCrop(224), T.ToTensor(), T.Normalize(pre.mean, pre.std)]
    )
    image = make_image((120, 80, 40), seed=7, size=size)
    np.testing.assert_allclose(pre(image), reference(image).numpy(), atol=1e-6)


def test_lite_preprocessing_is_x255_minus_127_over_128() -> None:
    image = Image.new("RGB", (256, 256), (0, 127, 255))
    out = LITE(image)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 100, 100], [(0 - 127) / 128, 0.0, (255 - 127) / 128], atol=1e-6)


def test_round_trips_through_json() -> None:
    again = Preprocessing.from_dict(LITE.to_dict())
    assert again == LITE
    assert LITE.to_dict()["schema"] == "edgetl.preprocessing/2"


def test_rejects_impossible_parameters() -> None:
    with pytest.raises(ValueError):
        Preprocessing(resize=200, crop=224, mean=(0, 0, 0), std=(1, 1, 1))
    with pytest.raises(ValueError):
        Preprocessing(resize=256, crop=224, mean=(0, 0, 0), std=(1, 0, 1))


def _encode(image: Image.Image, fmt: str, **kwargs) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    buffer.seek(0)
    return Image.open(buffer)


def test_transparent_pixels_become_white_not_black() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert to_rgb(rgba).getpixel((5, 5)) == (255, 255, 255)
    half = Image.new("RGBA", (10, 10), (0, 0, 0, 128))
    assert to_rgb(half).getpixel((5, 5)) == (127, 127, 127)


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    array = np.full((10, 10), 32768, dtype=np.uint16)
    image = _encode(Image.fromarray(array), "PNG")
    assert image.mode.startswith("I")
    assert to_rgb(image).getpixel((5, 5)) == (128, 128, 128)  # a plain convert("RGB") gives white


def test_cmyk_grayscale_and_palette_convert_to_rgb() -> None:
    base = make_image((200, 40, 40), seed=1)
    for converted in (base.convert("CMYK"), base.convert("L"), base.convert("P")):
        rgb = to_rgb(converted)
        assert rgb.mode == "RGB" and rgb.size == base.size


def test_exif_orientation_is_applied(tmp_path) -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = tmp_path / "rotated.jpg"
    image.save(path, "JPEG", exif=exif.tobytes())
    assert load_image(path).size == (20, 40)
