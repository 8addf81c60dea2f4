"""Golden test: what a device runs (runtime preprocessing + ONNX) equals what was trained (torchvision + PyTorch).

The two pipelines share nothing: the torch side uses torchvision's transforms on PIL images and
the PyTorch checkpoint; the device side uses edgetl.runtime (PIL + numpy) and ONNX Runtime on the
exported file. Real photos (hymenoptera val: JPEG, odd sizes, a .jpeg) go through both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetl.runtime import load

torch = pytest.importorskip("torch")
transforms = pytest.importorskip("torchvision.transforms")


def _srgb(image):
    """The contract's colour policy, written independently of edgetl: embedded ICC profile -> sRGB, perceptual."""
    import io

    from PIL import ImageCms

    profile = image.info.get("icc_profile")
    if not profile:
        return image.convert("RGB")
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    srgb = ImageCms.createProfile("sRGB")
    return ImageCms.profileToProfile(image.convert("RGB"), source, srgb, renderingIntent=0, outputMode="RGB")


def _torch_logits(run: Path, images: list[Path]) -> np.ndarray:
    from PIL import Image

    from edgetl.backbones.checkpoint import load_checkpoint
    from edgetl.preprocessing import read_preprocessing

    pre = read_preprocessing(run / "preprocessing.json")
    mode = {"bilinear": transforms.InterpolationMode.BILINEAR, "bicubic": transforms.InterpolationMode.BICUBIC}
    transform = transforms.Compose(
        [
            transforms.Resize(pre.resize, interpolation=mode[pre.interpolation]),
            transforms.CenterCrop(pre.crop),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]
    )
    model = load_checkpoint(run / "models/model.pt").build_model().eval()
    with torch.no_grad():
        batch = torch.stack([transform(_srgb(Image.open(path))) for path in images])
        return model(batch).numpy()


def test_runtime_and_onnx_agree_with_torchvision_and_pytorch_on_real_photos(built_run, hymenoptera: Path) -> None:
    images = (
        sorted((hymenoptera / "val" / "ants").glob("*.jp*g"))[:12]
        + sorted((hymenoptera / "val" / "bees").glob("*.jp*g"))[:12]
    )
    assert len(images) == 24
    expected = _torch_logits(built_run.run_dir, images)
    predictor = load(built_run.run_dir, artifact="onnx_fp32")
    try:
        got = predictor.logits(predictor.preprocessing.batch(images))
        predicted = [p[0].index for p in predictor.predict(images)]
    finally:
        predictor.close()
    assert np.abs(got - expected).max() < 1e-3
    assert predicted == list(expected.argmax(axis=1))
