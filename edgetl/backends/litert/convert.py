"""PyTorch checkpoint -> .tflite (litert-torch), and fp32 .tflite -> full-integer int8 (ai-edge-quantizer).

Path in / path out, like the OpenVINO converter. The int8 step is calibrated on the images the
convert stage passes in `options["calibration"]`: the optimize stage's calibration pool (train +
holdout), never val. Why this route and not litert-torch's PT2E int8 (1.3 points less accurate on
the quickstart) is measured by benchmarks/litert_int8.py (benchmarks/results/litert_int8.md).
"""

from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.errors import DependencyError, ModelFileError, first_line
from edgetl.machine import package_versions

_HINT = "pip install 'edgetl[litert-convert]' (litert-torch, ai-edge-quantizer; a device needs only edgetl[litert])"


def convert(source: Path, target: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Write `target` from `source`: a checkpoint (.pt) gives fp32, an fp32 .tflite gives int8."""
    if not source.is_file():
        raise ModelFileError(f"{source}: not found (the LiteRT conversion needs it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".tflite":
        return quantize_int8(source, target, options["calibration"])
    return convert_checkpoint(source, target, options["input_shape"])


def convert_checkpoint(checkpoint: Path, target: Path, input_shape: list[int]) -> dict[str, Any]:
    """fp32 .tflite with the checkpoint's NCHW float input (the same tensor every runner takes)."""
    import torch

    from edgetl.backbones.base import out_of_place
    from edgetl.backbones.checkpoint import load_checkpoint

    litert_torch = _import("litert_torch")
    model = load_checkpoint(checkpoint).build_model()  # already in eval mode
    sample = (torch.zeros([1, *input_shape], dtype=torch.float32),)
    shown = litert_torch.config.show_progress
    litert_torch.config.show_progress = False  # its progress tree would interleave with the build's log
    try:
        with out_of_place(model):
            litert_torch.convert(model, sample).export(str(target))
    except Exception as error:  # the converter raises many types
        raise ModelFileError(f"{checkpoint}: litert-torch cannot convert the model ({first_line(error)})") from None
    finally:
        litert_torch.config.show_progress = shown
    version = package_versions("litert-torch")["litert-torch"]
    return {
        "converter": f"litert_torch.convert (litert-torch {version})",
        "from": checkpoint.name,
        "input": "float32 NCHW, batch 1",
        "files": [target.name],
    }


def quantize_int8(float_model: Path, target: Path, calibration: np.ndarray) -> dict[str, Any]:
    """Static int8 weights and activations, int8 input/output: what Edge TPUs, NPUs and MCUs take."""
    quantizer_module = _import("ai_edge_quantizer")
    from ai_edge_litert.interpreter import Interpreter

    if len(calibration) == 0:
        raise ModelFileError(f"{float_model}: no calibration images for the LiteRT int8 model")
    signatures = Interpreter(model_path=str(float_model)).get_signature_list()
    signature, io = next(iter(signatures.items()))
    input_name = io["inputs"][0]
    quantizer = quantizer_module.quantizer.Quantizer(str(float_model))
    quantizer.load_quantization_recipe(quantizer_module.recipe.static_wi8_ai8())
    samples = [{input_name: calibration[i : i + 1].astype(np.float32)} for i in range(len(calibration))]
    with _quiet_tqdm():
        result = quantizer.calibrate({signature: samples})
    if target.exists():
        target.unlink()
    # `enable_progress_bar=False` does not reach its transformation step, whose bar printed through --quiet,
    # and a cast inside it warns "invalid value" on EfficientNet-Lite0 (cause not traced). What decides
    # whether the int8 model is usable is its parity with litert_fp32 on val images, measured right after
    # this and shown in the report.
    with _quiet_tqdm(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)
        quantized = quantizer.quantize(result, enable_progress_bar=False, enable_progress_report=False)
    quantized.export_model(str(target))
    version = package_versions("ai-edge-quantizer")["ai-edge-quantizer"]
    return {
        "converter": f"ai_edge_quantizer static_wi8_ai8 (ai-edge-quantizer {version})",
        "from": float_model.name,
        "calibration_images": int(len(calibration)),
        "input": "int8 NCHW (scale and zero point in the model)",
        "files": [target.name],
    }


@contextlib.contextmanager
def _quiet_tqdm() -> Iterator[None]:
    """ai-edge-quantizer's calibration draws a tqdm bar (no option turns it off); the build's log says what happens.

    TQDM_DISABLE is read when tqdm is imported, so the bar is switched off where the quantizer makes it.
    """
    from ai_edge_quantizer.utils import progress_utils

    real = progress_utils.tqdm
    quiet = types.SimpleNamespace(tqdm=lambda *args, **kwargs: real.tqdm(*args, **{**kwargs, "disable": True}))
    progress_utils.tqdm = quiet
    try:
        yield
    finally:
        progress_utils.tqdm = real


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DependencyError(f"{module} is not installed", hint=_HINT) from None
