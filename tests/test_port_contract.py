"""The preprocessing contract, field by field, on three paths that share no code: the Python runtime
(PIL + numpy), the in-graph model (ONNX ops on uint8 pixels) and the Node.js client (sharp + a
JavaScript port of the resize). Every image kind a user brings: EXIF rotations, non-sRGB ICC
profiles, odd sizes, grayscale, palette, alpha, CMYK, 16-bit.

The Node tests need `node` and `examples/node/node_modules` (`.ci/run` installs them and sets
EDGETL_REQUIRE_NODE=1, so there they fail instead of skipping).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from edgetl import layout
from edgetl.backbones import get_backbone
from edgetl.errors import ModelFileError
from edgetl.onnx.pixels import add_preprocessing, pixels_batch
from edgetl.preprocessing import Preprocessing, load_image, read_preprocessing
from tests.helpers import EXIF_STORED, WIDE_GAMUT_PRIMARIES, make_image, matrix_icc_profile, run_cli

NODE_CLIENT = Path(__file__).resolve().parents[1] / "examples" / "node"
LITE = get_backbone("efficientnet_lite0").pretrained.preprocessing
WIDE_GAMUT = matrix_icc_profile(WIDE_GAMUT_PRIMARIES, 2.2, "edgetl test wide gamut")
STEP = LITE.pixel_step()


def _displayed(size: tuple[int, int] = (300, 200)) -> Image.Image:
    return make_image((190, 70, 40), seed=11, size=size)


def _save(image: Image.Image, path: Path, fmt: str, **kwargs: object) -> Path:
    image.save(path, fmt, **kwargs)
    return path


def _case_files(root: Path) -> dict[str, tuple[Path, Image.Image | None]]:
    """name -> (file, the RGB image the contract says it decodes to, or None where only paths are compared)."""
    root.mkdir(parents=True, exist_ok=True)
    cases: dict[str, tuple[Path, Image.Image | None]] = {}
    shown = _displayed()
    for orientation, steps in EXIF_STORED.items():
        stored = shown
        for step in steps:
            stored = stored.transpose(step)
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = _save(stored, root / f"exif{orientation}.png", "PNG", exif=exif.tobytes())
        cases[f"exif-{orientation}"] = (path, shown)
    for size in [(224, 224), (225, 1000), (1000, 257), (257, 256), (301, 223)]:
        image = _displayed(size)
        cases[f"size-{size[0]}x{size[1]}"] = (_save(image, root / f"size{size[0]}x{size[1]}.png", "PNG"), image)
    wide = root / "wide-gamut.png"
    _save(shown, wide, "PNG", icc_profile=WIDE_GAMUT)
    srgb = ImageCms.profileToProfile(
        shown, ImageCms.ImageCmsProfile(io.BytesIO(WIDE_GAMUT)), ImageCms.createProfile("sRGB"), outputMode="RGB"
    )
    cases["icc-wide-gamut"] = (wide, srgb)
    gray = shown.convert("L")
    cases["grayscale"] = (_save(gray, root / "gray.png", "PNG"), gray.convert("RGB"))
    palette = shown.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    cases["palette"] = (_save(palette, root / "palette.png", "PNG"), palette.convert("RGB"))
    rgba = shown.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(shown.size))
    white = Image.new("RGBA", shown.size, (255, 255, 255, 255))
    cases["alpha"] = (_save(rgba, root / "alpha.png", "PNG"), Image.alpha_composite(white, rgba).convert("RGB"))
    cases["cmyk-jpeg"] = (_save(shown.convert("CMYK"), root / "cmyk.jpg", "JPEG", quality=95), None)
    deep = (np.asarray(gray, dtype=np.uint16) * 257).astype(np.uint16)
    cases["16-bit-gray"] = (_save(Image.fromarray(deep), root / "gray16.png", "PNG"), gray.convert("RGB"))
    return cases


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Image.Image | None]]:
    return _case_files(tmp_path_factory.mktemp("contract"))


CASE_NAMES = [
    *(f"exif-{o}" for o in EXIF_STORED),
    *("size-224x224", "size-225x1000", "size-1000x257", "size-257x256", "size-301x223"),
    "icc-wide-gamut",
    "grayscale",
    "palette",
    "alpha",
    "cmyk-jpeg",
    "16-bit-gray",
]


# -- the Python path -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES)
def test_python_path_decodes_each_case_as_the_contract_says(name: str, cases) -> None:
    path, expected = cases[name]
    decoded = load_image(path)
    assert decoded.mode == "RGB"
    if expected is not None:
        assert decoded.size == expected.size
        assert np.abs(np.asarray(decoded, int) - np.asarray(expected, int)).max() <= 1, name


def test_icc_policy_converts_to_srgb_and_schema_1_ignores_profiles(cases) -> None:
    path, _ = cases["icc-wide-gamut"]
    converted = np.asarray(load_image(path), int)
    ignored = np.asarray(load_image(path, "ignore"), int)
    assert np.abs(converted - ignored).max() > 20  # a wide-gamut file is visibly different read as sRGB
    old = {**LITE.to_dict(), "schema": "edgetl.preprocessing/1"}
    del old["color_management"]
    assert Preprocessing.from_dict(old).color_management == "ignore"
    assert Preprocessing.from_dict(LITE.to_dict()) == LITE


def test_contract_is_written_out_and_unknown_schemas_are_refused(tmp_path: Path) -> None:
    data = LITE.to_dict()
    assert data["schema"] == "edgetl.preprocessing/2"
    steps = [step["step"] for step in data["contract"]]
    assert steps == [
        "decode",
        "orientation",
        "color_management",
        "to_rgb",
        "resize",
        "center_crop",
        "normalize",
        "layout",
    ]
    assert "2^22" in data["contract"][4]["rule"] and "half_to_even" in data["contract"][5]["rule"]
    path = tmp_path / "preprocessing.json"
    path.write_text(json.dumps({**data, "schema": "edgetl.preprocessing/9"}))
    with pytest.raises(ModelFileError, match="preprocessing/9"):
        read_preprocessing(path)


def _contract_pass(pixels: np.ndarray, out_size: int, axis: int, support: float, weight) -> np.ndarray:
    """One pass of the contract's resize rule along `axis` (0 rows, 1 columns), written from its text."""
    size = pixels.shape[axis]
    scale = size / out_size
    stretch = max(1.0, scale)
    out = []
    for i in range(out_size):
        centre = (i + 0.5) * scale
        first = max(int(centre - support * stretch + 0.5), 0)
        last = min(int(centre + support * stretch + 0.5), size)
        taps = np.array([weight((j - centre + 0.5) / stretch) for j in range(first, last)])
        taps = taps / taps.sum()
        fixed = np.where(taps < 0, np.trunc(taps * 2**22 - 0.5), np.trunc(taps * 2**22 + 0.5)).astype(np.int64)
        window = np.take(pixels.astype(np.int64), range(first, last), axis=axis)
        total = 2**21 + np.tensordot(fixed, np.moveaxis(window, axis, 0), axes=1)
        out.append(np.clip(total >> 22, 0, 255).astype(np.uint8))
    return np.stack(out, axis=axis)


@pytest.mark.parametrize("size", [(225, 1000), (1000, 257), (300, 3000)])
def test_resize_follows_the_contracts_pass_order_whatever_pillow_does(size: tuple[int, int]) -> None:
    """Horizontal pass, then vertical, as written: Pillow 13 runs some tall images vertical first (one level off)."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    pre = Preprocessing.from_dict({**LITE.to_dict(), "resize": 146, "crop": 128})
    width, height = size
    new_w, new_h = (146, int(146 * height / width)) if width <= height else (int(146 * width / height), 146)
    triangle = lambda x: max(0.0, 1.0 - abs(x))  # noqa: E731 - the bilinear filter, support 1
    pixels = np.asarray(image)
    if new_w != width:
        pixels = _contract_pass(pixels, new_w, 1, 1.0, triangle)
    if new_h != height:
        pixels = _contract_pass(pixels, new_h, 0, 1.0, triangle)
    top, left = int(round((new_h - 128) / 2.0)), int(round((new_w - 128) / 2.0))
    expected = pixels[top : top + 128, left : left + 128]
    assert LITE.interpolation == "bilinear"
    assert np.array_equal(np.asarray(pre.resize_and_crop(image)), expected)


def test_float32_normalisation_order_matters_and_is_the_contracts() -> None:
    """mean 127/255 and std 128/255 put values on rounding boundaries: float64-then-cast differs."""
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    ours = LITE.normalize(Image.fromarray(pixels))
    f32 = np.float32
    by_contract = ((pixels.astype(f32) / f32(255)) - np.asarray(LITE.mean, f32)) / np.asarray(LITE.std, f32)
    assert np.array_equal(ours, by_contract.transpose(2, 0, 1))


# -- the in-graph path -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'network' that returns its input: the pixels model's output is then the preprocessed tensor itself."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 224, 224])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path_factory.mktemp("identity") / "identity.onnx"
    onnx.save(model, str(path))
    return path


def _run(model: Path, pixels: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": pixels})[0]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_in_graph_preprocessing_matches_the_python_path(name: str, cases, identity_model: Path, tmp_path: Path) -> None:
    path, _ = cases[name]
    expected = LITE.load(path)
    crop_model, any_model = tmp_path / "crop.onnx", tmp_path / "any.onnx"
    add_preprocessing(identity_model, crop_model, LITE, "crop_size")
    add_preprocessing(identity_model, any_model, LITE, "any_size")
    # crop_size: the client resized and cropped with PIL, the graph normalises: exact.
    assert np.array_equal(_run(crop_model, pixels_batch(LITE, path, "crop_size"))[0], expected)
    # any_size: ONNX Runtime's antialiased uint8 resize is not PIL's bit for bit, but a wrong size or a
    # crop offset off by one pixel would move far more than this on a textured image.
    got = _run(any_model, pixels_batch(LITE, path, "any_size"))[0]
    diff = np.abs(got - expected) / STEP
    assert got.shape == expected.shape
    assert diff.mean() < 0.05 and np.percentile(diff, 99.9) <= 2.01, (name, diff.mean(), diff.max())


def test_in_graph_model_refuses_old_opsets_for_resizing(identity_model: Path, tmp_path: Path) -> None:
    import onnx

    from edgetl.errors import UserInputError

    model = onnx.load(str(identity_model))
    model.opset_import[0].version = 17
    old = tmp_path / "old.onnx"
    onnx.save(model, str(old))
    with pytest.raises(UserInputError, match="opset 17"):
        add_preprocessing(old, tmp_path / "out.onnx", LITE, "any_size")
    add_preprocessing(old, tmp_path / "crop.onnx", LITE, "crop_size")  # no resize: fine


# -- edgetl bundle verify --------------------------------------------------------------------------


def test_bundle_verify_without_a_port_checks_this_machines_runtime(
    built_run, tmp_path: Path, capsys, monkeypatch
) -> None:
    """What a device runs after copying a bundle: its own decoding, resizing and runtime against the references."""
    import platform

    bundle = tmp_path / "bundle"
    shutil.copytree(built_run.run_dir / "bundle", bundle)
    code, out, err = run_cli(["bundle", "verify", str(bundle), "--json", str(tmp_path / "here.json")], capsys)
    assert code == 0, out + err
    result = json.loads((tmp_path / "here.json").read_text())
    assert result["port"]["machine"] == platform.machine() and result["port"]["runtime"]["runtime"] == "onnxruntime"
    assert result["inputs"]["values_differing"] == 0 and result["logits"]["passed"], result
    assert out.startswith("port: edgetl's own runtime on this machine")
    # A runtime whose kernels give other logits on this machine (simulated: classes swapped) fails with exit 4.
    from edgetl.runtime.predictor import Predictor

    real_logits = Predictor.logits
    monkeypatch.setattr(Predictor, "logits", lambda self, batch: real_logits(self, batch)[:, ::-1].copy())
    code, out, err = run_cli(["bundle", "verify", str(bundle)], capsys)
    assert code == 4 and "logits do not match" in err and "FAIL" in out


def test_bundle_verify_accepts_the_references_and_rejects_a_wrong_port(built_run, tmp_path: Path, capsys) -> None:
    bundle = built_run.run_dir / "bundle"
    inputs = np.load(bundle / "reference/inputs.npy")
    logits = np.load(bundle / "reference/logits.npy")
    np.save(tmp_path / "inputs.npy", inputs)
    (tmp_path / "logits.json").write_text(json.dumps({"logits": logits.tolist()}))
    code, out, _ = run_cli(
        [
            "bundle",
            "verify",
            str(bundle),
            "--inputs",
            str(tmp_path / "inputs.npy"),
            "--logits",
            str(tmp_path / "logits.json"),
        ],
        capsys,
    )
    assert code == 0, out
    assert "0/" in out and "ok" in out
    shifted = inputs.copy()
    shifted[0, 0, 0, 0] += 3 * STEP  # three pixel levels off: a port with a wrong resize
    np.save(tmp_path / "bad.npy", shifted)
    code, out, err = run_cli(["bundle", "verify", str(bundle), "--inputs", str(tmp_path / "bad.npy")], capsys)
    assert code == 4 and "images over tolerance: [0]" in out, out + err
    np.save(tmp_path / "short.npy", inputs[:2])
    code, _, err = run_cli(["bundle", "verify", str(bundle), "--inputs", str(tmp_path / "short.npy")], capsys)
    assert code == 2 and "shape" in err
    swapped = logits[:, ::-1].copy()
    np.save(tmp_path / "swapped.npy", swapped)
    code, out, _ = run_cli(["bundle", "verify", str(bundle), "--logits", str(tmp_path / "swapped.npy")], capsys)
    assert code == 4 and "FAIL" in out


def test_bundle_records_reference_tensors_and_the_pixels_model(built_run) -> None:
    bundle = built_run.run_dir / "bundle"
    info = json.loads((bundle / "bundle.json").read_text())
    reference = json.loads((bundle / "reference/reference.json").read_text())
    pre = read_preprocessing(bundle / "preprocessing.json")
    images = [bundle / item["file"] for item in reference["images"]]
    assert np.array_equal(np.load(bundle / "reference/inputs.npy"), pre.batch(images))
    assert reference["tolerances"]["inputs_max_abs"] == pytest.approx(pre.pixel_step(), abs=1e-5)
    pixels = info["pixels_model"]
    assert pixels["made"] and pixels["file"] in info["files"]
    measured = pixels["measured"]
    assert measured["images"] > 0 and measured["latency"]["pixels_model_ms"] > 0
    got = np.stack([_run(bundle / pixels["file"], pixels_batch(pre, image, "any_size"))[0] for image in images])
    assert np.allclose(got, np.load(bundle / "reference/pixels_logits.npy"), atol=1e-4)


# -- the Node.js client ----------------------------------------------------------------------------


def _node_or_skip() -> str:
    node = shutil.which("node")
    if (
        node
        and (NODE_CLIENT / "node_modules" / "onnxruntime-node").is_dir()
        and (NODE_CLIENT / "node_modules" / "sharp").is_dir()
    ):
        return node
    if os.environ.get("EDGETL_REQUIRE_NODE") == "1":
        pytest.fail("EDGETL_REQUIRE_NODE=1 but node or examples/node/node_modules is missing (npm ci there)")
    pytest.skip("node or examples/node/node_modules missing (cd examples/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci)")


def _node(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_node_or_skip(), *args], capture_output=True, text=True, timeout=300, cwd=NODE_CLIENT)


@pytest.fixture(scope="module")
def node_tensors(built_run, cases) -> Callable[[str], np.ndarray]:
    """Every case through the Node client's preprocessing, in one node process."""
    bundle = built_run.run_dir / "bundle"
    out = Path(cases[CASE_NAMES[0]][0]).parent / "node.npy"
    done = _node(["classify.mjs", str(bundle), *(str(cases[n][0]) for n in CASE_NAMES), "--tensors", str(out)])
    assert done.returncode == 0, done.stderr
    tensors = np.load(out)
    return lambda name: tensors[CASE_NAMES.index(name)]


@pytest.fixture(scope="module")
def bundle_preprocessing(built_run) -> Preprocessing:
    """The transform the Node client read from the bundle: what its tensors are compared with."""
    return read_preprocessing(built_run.run_dir / "bundle" / layout.BUNDLE_PREPROCESSING)


# Where the Node client (libvips) and PIL may differ by one level: colour conversion (two LittleCMS
# builds), alpha compositing and 16-bit scaling round differently. CMYK without a profile is a known
# gap of this client (its README says so): libvips converts through a generic CMYK profile, the
# contract says the naive formula, and sharp gives no access to the raw CMYK samples.
_WITHIN_ONE_LEVEL = {"icc-wide-gamut", "alpha", "16-bit-gray"}


@pytest.mark.parametrize("name", CASE_NAMES)
def test_node_client_preprocesses_each_case_like_python(name: str, cases, node_tensors, bundle_preprocessing) -> None:
    path, _ = cases[name]
    diff = np.abs(node_tensors(name) - bundle_preprocessing.load(path)) / bundle_preprocessing.pixel_step()
    if name == "cmyk-jpeg":
        assert 1 < diff.mean() < 16, diff.mean()  # the known gap, bounded: a wrong channel order is ~60
    elif name in _WITHIN_ONE_LEVEL:
        assert diff.max() <= 1.01, (name, diff.max())
    else:
        assert diff.max() == 0, (name, diff.max())


def _reference_images(bundle: Path) -> list[Path]:
    return sorted(p for p in (bundle / "reference").iterdir() if p.suffix not in (".npy", ".json"))


def test_node_client_passes_the_bundle_check_and_edgetl_verify(built_run, tmp_path: Path, capsys) -> None:
    bundle = built_run.run_dir / "bundle"
    done = _node(["check.mjs", str(bundle), "--out", str(tmp_path)])
    assert done.returncode == 0, done.stdout + done.stderr
    code, out, _ = run_cli(
        [
            "bundle", "verify", str(bundle),
            "--inputs", str(tmp_path / "inputs.npy"),
            "--logits", str(tmp_path / "logits.npy"),
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, out
    result = json.loads(json.dumps(out))
    assert "inputs: max |diff| 0 " in result  # synthetic images carry no profile: bit for bit
    logits = np.load(tmp_path / "logits.npy")
    assert np.abs(logits - np.load(bundle / "reference/logits.npy")).max() <= 1e-3


def test_node_client_agrees_with_edgetl_predict_plain_and_pixels(built_run) -> None:
    from edgetl.runtime import load

    bundle = built_run.run_dir / "bundle"
    images = [str(p) for p in _reference_images(bundle)]
    predictor = load(bundle)
    try:
        expected = [p[0].index for p in predictor.predict(images)]
    finally:
        predictor.close()
    for extra in ([], ["--pixels"]):
        done = _node(["classify.mjs", str(bundle), *images, "--json", *extra])
        assert done.returncode == 0, done.stderr
        got = [json.loads(line)["top"][0]["index"] for line in done.stdout.splitlines()]
        assert got == expected, extra


def test_node_client_refuses_a_tampered_bundle(built_run, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(built_run.run_dir / "bundle", copy)
    with (copy / "labels.txt").open("a") as handle:
        handle.write("extra\n")
    done = _node(["classify.mjs", str(copy), str(_reference_images(copy)[0])])
    assert done.returncode == 2 and "SHA-256" in done.stderr
