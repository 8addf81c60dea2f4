"""`edgetl bundle verify`: check a port (C++, JavaScript, Kotlin, ...) against the bundle's references.

A port has two places to go wrong, and they are checked separately so a failure says which:
- its preprocessing: it writes the tensors it made from `reference/NNN.*` (`--inputs`), compared with
  `reference/inputs.npy`;
- its model run: it runs the model on `reference/inputs.npy` and writes the logits (`--logits`),
  compared with `reference/logits.npy`. With `--logits-from own-inputs` the logits come from its own
  preprocessing instead (end to end): then only top-1 agreement is held to the tolerance.
Tolerances are the ones the bundle states in `reference/reference.json`, not chosen here.
Files are `.npy` (float32, any float dtype) or `.json` (a list of lists, or {"inputs"|"logits": ...}).

Given neither file, this machine's own edgetl runtime is the port (`verify_here`): what a device runs
after copying the bundle, to learn whether its decoder, its resize and its runtime's kernels reproduce
the build machine's numbers (an arm64 board, another ONNX Runtime release).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgetl import layout
from edgetl.bundle import Bundle, inside, read_bundle, reference_batch
from edgetl.errors import ModelFileError, UserInputError, VerificationError

LogitsFrom = Literal["reference-inputs", "own-inputs"]


def load_port_array(path: Path, key: str) -> np.ndarray:
    """A port's output file as float32; anything unreadable is a one-line error naming the file."""
    if not path.is_file():
        raise UserInputError(f"{path}: not found")
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
        elif path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            array = np.asarray(data[key] if isinstance(data, dict) else data, dtype=np.float64)
        else:
            raise UserInputError(f"{path}: expected a .npy or .json file")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: cannot read {key} ({error})") from None
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise UserInputError(f"{path}: {key} must be finite numbers")
    return array.astype(np.float32)


def _references(bundle: Bundle) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    reference = bundle.reference()
    if "tolerances" not in reference:
        raise ModelFileError(
            f"{bundle.root / layout.BUNDLE_REFERENCE}: this bundle has no reference tensors (built by an older "
            "edgetl); rebuild it to verify a port"
        )
    source = bundle.root / layout.BUNDLE_REFERENCE
    arrays = []
    for key in ("inputs", "logits"):
        entry = reference.get(key)
        path = inside(bundle.root, entry.get("file") if isinstance(entry, dict) else None, f"{key}.file", source)
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as error:
            raise ModelFileError(f"{path}: unreadable reference {key} ({error}); rebuild the bundle") from None
    if not isinstance(reference["tolerances"], dict):
        raise ModelFileError(f"{source}: tolerances must be a mapping; rebuild the bundle")
    return reference["tolerances"], arrays[0], arrays[1]


def _shape_check(path: Path, got: np.ndarray, expected: np.ndarray, what: str) -> np.ndarray:
    if got.size == expected.size and got.shape != expected.shape:
        got = got.reshape(expected.shape)  # a flat dump in the same order is fine
    if got.shape != expected.shape:
        raise UserInputError(f"{path}: {what} shape {list(got.shape)}, expected {list(expected.shape)}")
    return got


def compare_inputs(got: np.ndarray, expected: np.ndarray, tolerance: float, pixel_step: float) -> dict[str, Any]:
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    per_image = diff.reshape(len(diff), -1).max(axis=1) if len(diff) else np.zeros(0)
    return {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "max_pixel_levels": round(float(diff.max()) / pixel_step, 2) if diff.size else 0.0,
        "values_differing": int((diff > 1e-6).sum()),
        "values": int(diff.size),
        "images_over_tolerance": [int(i) for i in np.flatnonzero(per_image > tolerance)],
        "tolerance": tolerance,
        "passed": bool((per_image <= tolerance).all()),
    }


def compare_logits(
    got: np.ndarray, expected: np.ndarray, tolerance: float, min_agreement: float, end_to_end: bool
) -> dict[str, Any]:
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    agreement = float((got.argmax(axis=1) == expected.argmax(axis=1)).mean() * 100.0) if len(got) else 100.0
    max_abs = float(diff.max()) if diff.size else 0.0
    within = end_to_end or max_abs <= tolerance
    return {
        "from": "own-inputs" if end_to_end else "reference-inputs",
        "max_abs": max_abs,
        "tolerance": None if end_to_end else tolerance,
        "top1_agreement": agreement,
        "min_top1_agreement": min_agreement,
        "images_disagreeing": [int(i) for i in np.flatnonzero(got.argmax(axis=1) != expected.argmax(axis=1))],
        "passed": bool(within and agreement >= min_agreement),
    }


def verify_port(
    bundle_dir: str | Path,
    inputs: Path | None = None,
    logits: Path | None = None,
    logits_from: LogitsFrom = "reference-inputs",
) -> dict[str, Any]:
    """Compare a port's tensors and/or logits with the bundle's references; VerificationError (exit 4) on failure."""
    if inputs is None and logits is None:
        raise UserInputError("give --inputs (the port's preprocessed reference images) and/or --logits")
    bundle = read_bundle(bundle_dir)
    tolerances, expected_inputs, expected_logits = _references(bundle)
    got_inputs = got_logits = None
    if inputs is not None:
        got_inputs = _shape_check(inputs, load_port_array(inputs, "inputs"), expected_inputs, "inputs")
    if logits is not None:
        got_logits = _shape_check(logits, load_port_array(logits, "logits"), expected_logits, "logits")
    return _compare(bundle, tolerances, expected_inputs, expected_logits, got_inputs, got_logits, logits_from)


def verify_here(bundle_dir: str | Path, threads: int | None = None) -> dict[str, Any]:
    """This machine's edgetl runtime as the port: its preprocessing of the reference images, and the
    bundle's model (the runtime a device loads) on `reference/inputs.npy`, held to the bundle's tolerances."""
    from edgetl.runtime import load

    bundle = read_bundle(bundle_dir)
    tolerances, expected_inputs, expected_logits = _references(bundle)
    got_inputs = reference_batch(bundle)
    predictor = load(bundle.root, threads=threads)
    try:
        got_logits = predictor.logits(expected_inputs)
        runner = predictor.runner.describe()
    finally:
        predictor.close()
    result = _compare(bundle, tolerances, expected_inputs, expected_logits, got_inputs, got_logits, "reference-inputs")
    result["port"] = {
        "what": "edgetl's own runtime on this machine",
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "runtime": {k: runner.get(k) for k in ("runtime", "version", "providers")},
    }
    return result


def _compare(
    bundle: Bundle,
    tolerances: dict[str, Any],
    expected_inputs: np.ndarray,
    expected_logits: np.ndarray,
    got_inputs: np.ndarray | None,
    got_logits: np.ndarray | None,
    logits_from: LogitsFrom,
) -> dict[str, Any]:
    result: dict[str, Any] = {"bundle": str(bundle.root), "images": int(len(expected_logits))}
    if got_inputs is not None:
        pixel_step = bundle.preprocessing().pixel_step()
        result["inputs"] = compare_inputs(got_inputs, expected_inputs, float(tolerances["inputs_max_abs"]), pixel_step)
    if got_logits is not None:
        result["logits"] = compare_logits(
            got_logits,
            expected_logits,
            float(tolerances["logits_max_abs"]),
            float(tolerances["min_top1_agreement"]),
            end_to_end=logits_from == "own-inputs",
        )
    result["passed"] = all(result[k]["passed"] for k in ("inputs", "logits") if k in result)
    return result


def describe(result: dict[str, Any]) -> list[str]:
    """One line per check, for the terminal."""
    lines = []
    if "port" in result:
        port, runtime = result["port"], result["port"]["runtime"]
        lines.append(
            f"port: {port['what']} ({port['system']} {port['machine']}, Python {port['python']}, "
            f"{runtime['runtime']} {runtime['version']})"
        )
    if "inputs" in result:
        r = result["inputs"]
        lines.append(
            f"inputs: max |diff| {r['max_abs']:.3g} ({r['max_pixel_levels']:g} pixel levels; tolerance "
            f"{r['tolerance']:.3g}), {r['values_differing']}/{r['values']} values differ"
            + (f", images over tolerance: {r['images_over_tolerance']}" if r["images_over_tolerance"] else "")
            + f": {'ok' if r['passed'] else 'FAIL'}"
        )
    if "logits" in result:
        r = result["logits"]
        bound = f" (tolerance {r['tolerance']:.3g})" if r["tolerance"] is not None else " (end to end: reported only)"
        lines.append(
            f"logits from {r['from']}: max |diff| {r['max_abs']:.3g}{bound}, top-1 agreement "
            f"{r['top1_agreement']:.1f}% (min {r['min_top1_agreement']:.1f}%)"
            + (f", disagreeing images: {r['images_disagreeing']}" if r["images_disagreeing"] else "")
            + f": {'ok' if r['passed'] else 'FAIL'}"
        )
    return lines


def check(result: dict[str, Any]) -> None:
    if not result["passed"]:
        failed = [k for k in ("inputs", "logits") if k in result and not result[k]["passed"]]
        raise VerificationError(
            f"{result['bundle']}: the port's {' and '.join(failed)} do not match the bundle's references"
        )
