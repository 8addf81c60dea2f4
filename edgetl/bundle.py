"""Device bundles: everything a target device needs to build, verify and run the model, without torch.

A bundle is a plain directory:

    bundle.json          what it is: target, model, precision, engine options, trtexec command, hashes
    model.onnx           the deployed model: an ONNX file (the Q/DQ int8 model for int8 targets, metadata
                         embedded), or model.xml + model.bin when an OpenVINO IR was measured fastest
    labels.txt           class names, one per line, in output order
    preprocessing.json   the exact evaluation transform (resize, crop, mean, std, layout)
    reference/           a few val images, their preprocessed tensors (inputs.npy), the logits the shipped model
                         gave for them on the build machine (logits.npy) and the tolerances a port must meet
                         (reference.json); `edgetl bundle verify` checks a port's outputs against them
    build_engine.sh      TensorRT targets: the trtexec command that builds the same engine as `edgetl engine build`
    README.md            the steps on the device

Engines only run on the GPU model and TensorRT version they were built with, so for Jetson targets
the engine is built on the device: `edgetl engine build BUNDLE` builds `model.engine` (+ sidecar),
runs the reference images through it with the bundle's preprocessing and refuses the engine when
its predictions disagree with the reference. This module imports neither torch nor TensorRT.
"""

from __future__ import annotations

import hashlib
import math
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetl import layout
from edgetl.errors import ModelFileError, UserInputError, VerificationError
from edgetl.files import read_json, sha256_file, write_json_atomic, write_text_atomic
from edgetl.preprocessing import Preprocessing, read_preprocessing

BUNDLE_SCHEMA = "edgetl.bundle/1"
DEVICE_CHOICE_SCHEMA = "edgetl.device-choice/1"


@dataclass(frozen=True)
class Bundle:
    """A bundle directory read back from disk (on the device, or for `edgetl predict`)."""

    root: Path
    info: dict[str, Any]
    # The model file and its companions as they were hashed: runners load these, never the files again.
    verified: dict[Path, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def model_path(self) -> Path:
        return inside(self.root, self.info["model"]["file"], "model.file")

    @property
    def engine_path(self) -> Path:
        return self.root / layout.BUNDLE_ENGINE

    @property
    def runtime(self) -> str:
        return self.info["target"]["runtime"]

    @property
    def engine_options(self) -> dict[str, Any] | None:
        return self.info.get("engine", {}).get("options")

    def labels(self) -> list[str]:
        return (self.root / layout.BUNDLE_LABELS).read_text(encoding="utf-8").splitlines()

    def candidates(self) -> dict[str, Path]:
        """The other models the device may choose between, by artefact name (empty for most bundles)."""
        return {
            c["artifact"]: inside(self.root, c["file"], "candidates.file", self.root / layout.BUNDLE_INFO)
            for c in self.info.get("candidates") or []
        }

    def device_choice(self) -> str | None:
        """The artefact `edgetl bench BUNDLE --select` chose on this device (device.json), or None.

        A device.json is tied to the bundle.json it was measured with; a stale or foreign one is refused.
        """
        path = self.root / layout.BUNDLE_DEVICE_CHOICE
        if not path.is_file():
            return None
        data = _read_json(path, "delete it or rerun `edgetl bench BUNDLE --select`")
        choices = {self.info["model"]["artifact"], *self.candidates()}
        chosen = data.get("chosen") if isinstance(data, dict) else None
        if not isinstance(data, dict) or data.get("schema") != DEVICE_CHOICE_SCHEMA or chosen not in choices:
            raise ModelFileError(
                f"{path}: chosen must be one of {sorted(choices)} (schema {DEVICE_CHOICE_SCHEMA}); delete it or rerun "
                "`edgetl bench BUNDLE --select`"
            )
        if data.get("bundle_sha256") != sha256_file(self.root / layout.BUNDLE_INFO):
            raise ModelFileError(
                f"{path}: measured for another bundle.json (the bundle was replaced since); rerun "
                "`edgetl bench BUNDLE --select` or delete it"
            )
        return str(chosen)

    def preprocessing(self) -> Preprocessing:
        return read_preprocessing(self.root / layout.BUNDLE_PREPROCESSING)

    def reference(self) -> dict[str, Any]:
        """reference/reference.json, checked: every reader indexes its images, labels and logits."""
        path = self.root / layout.BUNDLE_REFERENCE
        return check_reference(_read_json(path, "copy the bundle again from the run directory"), path)


def _read_json(path: Path, remedy: str) -> Any:
    """A bundle's JSON file; unreadable or not JSON is one line naming it and what to do."""
    try:
        return read_json(path)
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{path}: unreadable ({error}); {remedy}") from None


def is_bundle(path: Path) -> bool:
    return (path / layout.BUNDLE_INFO).is_file()


def read_bundle(path: str | Path) -> Bundle:
    """Open a bundle; a missing or foreign bundle.json is a one-line user error."""
    root = Path(path)
    info_path = root / layout.BUNDLE_INFO
    if not info_path.is_file():
        raise UserInputError(f"{root}: not an edgetl device bundle ({layout.BUNDLE_INFO} missing)")
    try:
        info = read_json(info_path)
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{info_path}: unreadable ({error})") from None
    schema = info.get("schema") if isinstance(info, dict) else None
    if schema != BUNDLE_SCHEMA:
        raise ModelFileError(f"{info_path}: schema {schema!r}, expected {BUNDLE_SCHEMA!r}")
    # Every later read indexes these; a hand-edited or truncated file must not surface as a KeyError.
    for section, key in (("model", "file"), ("model", "artifact"), ("target", "name"), ("target", "runtime")):
        if not isinstance(info.get(section), dict) or not isinstance(info[section].get(key), str):
            raise ModelFileError(f"{info_path}: {section}.{key} missing; copy the bundle again from the run directory")
    return Bundle(root, info, _check_integrity(root, info, info_path))


def inside(root: Path, relative: object, what: str, source: Path | None = None) -> Path:
    """`root / relative`, refused unless it is a relative path that stays inside the bundle (symlinks resolved).

    `source` is the file that named the path (default: bundle.json), so an error points at it.
    """
    named_in = source or root / layout.BUNDLE_INFO
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute():
        raise ModelFileError(f"{named_in}: {what} {relative!r} must be a path inside the bundle")
    path = root / relative
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise ModelFileError(
            f"{named_in}: {what} {relative!r} points outside the bundle; refusing to open it"
        ) from None
    return path


def check_reference(data: object, path: Path) -> dict[str, Any]:
    """reference.json's images: a non-empty list, each with a file, an integer label and finite logits of one width."""
    again = "copy the bundle again from the run directory"
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise ModelFileError(f"{path}: images must be a non-empty list of reference images; {again}")
    width = None
    for index, item in enumerate(images):
        where = f"{path}: images[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("file"), str):
            raise ModelFileError(f"{where} must be a mapping with a 'file' name; {again}")
        logits = item.get("logits")
        if not isinstance(logits, list) or not logits or not all(_finite_number(v) for v in logits):
            raise ModelFileError(f"{where}.logits must be a non-empty list of finite numbers; {again}")
        width = width or len(logits)
        if len(logits) != width:
            raise ModelFileError(f"{where}.logits has {len(logits)} values, images[0] has {width}; {again}")
        label = item.get("label")
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < width:
            raise ModelFileError(f"{where}.label must be a class index from 0 to {width - 1}, got {label!r}; {again}")
    return data  # type: ignore[return-value]


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_integrity(root: Path, info: dict[str, Any], info_path: Path) -> dict[Path, bytes]:
    """Every file bundle.json names stays inside the bundle, exists, and has the SHA-256 recorded for it.

    Bundles written before `files` was recorded are still read: their model (and companions) are checked
    against `model.sha256`, the other files only for presence. Returns the model's and its companions'
    bytes as hashed, so that they, not the files reopened later, are what runs.
    """
    model = info["model"]
    files, companions = info.get("files") or {}, model.get("companions") or {}
    for what, value in (("files", files), ("model.companions", companions)):
        if not isinstance(value, dict):
            raise ModelFileError(
                f"{info_path}: {what} must map file names to SHA-256 digests, got {type(value).__name__}; copy the "
                "bundle again from the run directory"
            )
    recorded: dict[str, Any] = dict(files)
    recorded.setdefault(model["file"], model.get("sha256"))
    for name, digest in companions.items():
        recorded.setdefault(name, digest)
    for relative in (layout.BUNDLE_LABELS, layout.BUNDLE_PREPROCESSING):
        recorded.setdefault(relative, None)
    candidates = info.get("candidates") or []
    if not isinstance(candidates, list) or not all(
        isinstance(c, dict) and isinstance(c.get("file"), str) and isinstance(c.get("companions", {}), dict)
        for c in candidates
    ):
        raise ModelFileError(f"{info_path}: candidates must be a list of models; copy the bundle again")
    for candidate in candidates:
        recorded.setdefault(candidate["file"], candidate.get("sha256"))
        for name, digest in (candidate.get("companions") or {}).items():
            recorded.setdefault(name, digest)
    runs = {model["file"], *companions, *(c["file"] for c in candidates)}
    runs |= {name for c in candidates for name in (c.get("companions") or {})}
    verified: dict[Path, bytes] = {}
    for relative, digest in recorded.items():
        path = inside(root, relative, "file")
        if not path.is_file():
            raise ModelFileError(f"{path}: missing from the bundle; copy the whole bundle directory")
        if digest is None:
            continue
        data = path.read_bytes() if relative in runs else None
        if (hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)) != digest:
            raise ModelFileError(
                f"{path}: its SHA-256 does not match the one in {info_path.name} (changed or damaged after the "
                "build); copy the bundle again from the run directory"
            )
        if data is not None:
            verified[path] = data
    return verified


# Max |logit difference| a correct port may show when it runs the model on reference/inputs.npy: fp32
# kernels differ only in summation order; fp16 in rounding of every op. int8 kernels differ by whole
# quantization steps between CPUs (VNNI or not, x86 or Arm), so theirs is a share of the logits' spread.
_LOGIT_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}
_INT8_LOGIT_SHARE = 0.05


def reference_tolerances(
    precision: str, pre: Preprocessing, logits: np.ndarray, min_agreement: float
) -> dict[str, Any]:
    """What `edgetl bundle verify` holds a port to, stated in the bundle so a port can check itself."""
    spread = float(logits.max() - logits.min()) if logits.size else 0.0
    logit_tolerance = _LOGIT_TOLERANCE.get(precision, round(max(1e-3, _INT8_LOGIT_SHARE * spread), 6))
    return {
        "inputs_max_abs": round(pre.pixel_step() + 1e-6, 6),
        "inputs_note": "a port that follows preprocessing.json exactly gets 0; the tolerance is one 8-bit pixel "
        "level, for colour-managed images where two LittleCMS builds differ by 1",
        "logits_max_abs": logit_tolerance,
        "logits_note": f"{precision} model run on inputs.npy"
        + ("" if precision in _LOGIT_TOLERANCE else f" ({_INT8_LOGIT_SHARE:.0%} of the reference logits' spread)"),
        "min_top1_agreement": min_agreement,
    }


def write_bundle(
    out: Path,
    *,
    name: str,
    model: Path,
    artifact: str,
    companions: list[Path],
    runtime_label: str,
    labels: list[str],
    preprocessing: Preprocessing,
    target: dict[str, Any],
    engine_options: dict[str, Any] | None,
    tensorrt_release: str | None,
    verify_min_agreement: float,
    input_name: str,
    input_shape: list[int],
    reference_images: list[tuple[Path, int]],
    reference_inputs: np.ndarray,
    reference_logits: np.ndarray,
    precision: str,
    pixels: dict[str, Any],
    edgetl_version: str,
    candidates: list[dict[str, Any]] | None = None,
    shipped_rank: dict[str, Any] | None = None,
    web_app: bool = False,
    web_runtime: Any = None,
) -> list[str]:
    """Write a bundle into `out` (a stage's temporary folder); returns the files written, relative to out.

    `candidates` are the other artefacts a device may choose between (`edgetl bench BUNDLE --select`):
    each goes to candidates/<artifact>/ with its build-machine rank, which is a guess for the device.
    `web_app` adds web/ (the page and module that run model_pixels.onnx in onnxruntime-web), with
    `web_runtime` (an `edgetl.web.WebRuntime`) copied into it when there is one.
    """
    out.mkdir(parents=True, exist_ok=True)
    model_file, companion_files = _copy_model(model, companions, out, "")
    write_text_atomic(out / layout.BUNDLE_LABELS, "\n".join(labels) + "\n")
    write_json_atomic(out / layout.BUNDLE_PREPROCESSING, preprocessing.to_dict())
    files = [model_file, *companion_files, layout.BUNDLE_LABELS, layout.BUNDLE_PREPROCESSING]
    references = []
    for index, ((image, label), logits) in enumerate(zip(reference_images, reference_logits, strict=True)):
        copy = f"{layout.BUNDLE_REFERENCE_DIR}/{index:03d}{image.suffix.lower()}"
        (out / layout.BUNDLE_REFERENCE_DIR).mkdir(exist_ok=True)
        shutil.copyfile(image, out / copy)
        files.append(copy)
        references.append({"file": copy, "label": int(label), "logits": [round(float(v), 6) for v in logits]})
    (out / layout.BUNDLE_REFERENCE_DIR).mkdir(exist_ok=True)
    np.save(out / layout.BUNDLE_REFERENCE_INPUTS, np.ascontiguousarray(reference_inputs, dtype=np.float32))
    np.save(out / layout.BUNDLE_REFERENCE_LOGITS, np.ascontiguousarray(reference_logits, dtype=np.float32))
    write_json_atomic(
        out / layout.BUNDLE_REFERENCE,
        {
            "source": f"{runtime_label}, {artifact}",
            "images": references,
            "inputs": {
                "file": layout.BUNDLE_REFERENCE_INPUTS,
                "dtype": "float32",
                "shape": list(reference_inputs.shape),
                "what": "each reference image through preprocessing.json, in the order of `images`",
            },
            "logits": {
                "file": layout.BUNDLE_REFERENCE_LOGITS,
                "dtype": "float32",
                "shape": list(reference_logits.shape),
                "what": f"{artifact} on inputs.npy, on the build machine",
            },
            "tolerances": reference_tolerances(precision, preprocessing, reference_logits, verify_min_agreement),
        },
    )
    files += [layout.BUNDLE_REFERENCE_INPUTS, layout.BUNDLE_REFERENCE_LOGITS, layout.BUNDLE_REFERENCE]
    pixels_record: dict[str, Any] = {"made": False, "reason": pixels.get("reason")}
    if pixels.get("made"):
        shutil.copyfile(pixels["path"], out / layout.BUNDLE_PIXELS_MODEL)
        np.save(out / layout.BUNDLE_REFERENCE_PIXELS_LOGITS, np.asarray(pixels["reference_logits"], dtype=np.float32))
        files += [layout.BUNDLE_PIXELS_MODEL, layout.BUNDLE_REFERENCE_PIXELS_LOGITS]
        pixels_record = {
            "made": True,
            "file": layout.BUNDLE_PIXELS_MODEL,
            "form": pixels["form"],
            "input": pixels["input"],
            "reference_logits": layout.BUNDLE_REFERENCE_PIXELS_LOGITS,
            "measured": pixels["measured"],
        }
    info: dict[str, Any] = {
        "schema": BUNDLE_SCHEMA,
        "name": name,
        "edgetl_version": edgetl_version,
        "target": target,
        "model": {
            "file": model_file,
            "artifact": artifact,
            "companions": {name: sha256_file(out / name) for name in companion_files},
            "sha256": sha256_file(out / model_file),
            "input_name": input_name,
            "input_shape": list(input_shape),
        },
        "labels": layout.BUNDLE_LABELS,
        "preprocessing": layout.BUNDLE_PREPROCESSING,
        "reference": {"file": layout.BUNDLE_REFERENCE, "images": len(references)},
        "pixels_model": pixels_record,
    }
    if web_app:
        from edgetl.web import write_web_app

        if not pixels.get("made"):
            raise ValueError("a web bundle needs model_pixels.onnx")  # the profile check makes this unreachable
        files += write_web_app(out, web_runtime)
        info["web"] = {
            "page": f"{layout.BUNDLE_WEB_DIR}/{layout.BUNDLE_WEB_PAGE}",
            "runtime": f"{layout.BUNDLE_WEB_DIR}/{layout.BUNDLE_WEB_RUNTIME}",
            "onnxruntime_web": web_runtime.version if web_runtime is not None else None,
        }
    if candidates:
        info["model"]["build_machine"] = shipped_rank
        info["candidates"] = []
        for candidate in candidates:
            folder = f"{layout.BUNDLE_CANDIDATES_DIR}/{candidate['artifact']}"
            stem, extra = _copy_model(candidate["model"], candidate["companions"], out, folder)
            files += [stem, *extra]
            info["candidates"].append(
                {
                    "artifact": candidate["artifact"],
                    "file": stem,
                    "companions": {name: sha256_file(out / name) for name in extra},
                    "sha256": sha256_file(out / stem),
                    "runtime": candidate["runtime"],
                    "precision": candidate["precision"],
                    "build_machine": candidate["build_machine"],
                }
            )
        info["candidates_note"] = (
            "ranked by the build machine's latency, a guess for the device: `edgetl bench BUNDLE --select` on the "
            "device measures the model and every candidate there and records its choice in device.json"
        )
    if engine_options is not None:
        from edgetl.backends.tensorrt.build import trtexec_command
        from edgetl.backends.tensorrt.options import EngineOptions
        from edgetl.backends.tensorrt.versions import TensorRTRelease

        options = EngineOptions.from_dict(engine_options)
        release = TensorRTRelease.parse(tensorrt_release or "", "bundle TensorRT release")
        command = trtexec_command(layout.BUNDLE_MODEL, layout.BUNDLE_ENGINE, options, input_name, input_shape, release)
        info["engine"] = {
            "file": layout.BUNDLE_ENGINE,
            "tensorrt": str(release),  # the release build_engine.sh is written for
            "strongly_typed": options.strongly_typed_for(release),
            "options": engine_options,
            "verify_min_agreement": verify_min_agreement,
            "trtexec": shlex.join(command),
        }
        script = (
            f"#!/bin/sh\n# Builds the TensorRT engine on this device with TensorRT {release}'s trtexec (ships with "
            "TensorRT/JetPack).\n"
            "# `edgetl engine build .` does the same and also verifies the engine on the reference images.\n"
            'set -eu\ncd "$(dirname "$0")"\n' + shlex.join(command) + "\n"
        )
        write_text_atomic(out / layout.BUNDLE_BUILD_SCRIPT, script)
        (out / layout.BUNDLE_BUILD_SCRIPT).chmod(0o755)
        files.append(layout.BUNDLE_BUILD_SCRIPT)
    write_text_atomic(out / layout.BUNDLE_README, _readme(name, target, info))
    # Every file's hash, so a device (edgetl or a port) checks what it loads: see the README's "Integrity".
    info["files"] = {relative: sha256_file(out / relative) for relative in [*files, layout.BUNDLE_README]}
    write_json_atomic(out / layout.BUNDLE_INFO, info)
    return [*files, layout.BUNDLE_README, layout.BUNDLE_INFO]


def _copy_model(model: Path, companions: list[Path], out: Path, folder: str) -> tuple[str, list[str]]:
    """Copy a model into `out/folder` as model.onnx, or model.xml + model.bin for an OpenVINO IR (one stem,
    the artefact's own suffixes); returns the model's and its companions' paths relative to `out`."""
    stem = (Path(folder) / Path(layout.BUNDLE_MODEL).with_suffix(model.suffix).name).as_posix()
    (out / stem).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, out / stem)
    copies = [Path(stem).with_suffix(companion.suffix).as_posix() for companion in companions]
    for companion, copy in zip(companions, copies, strict=True):
        shutil.copyfile(companion, out / copy)
    return stem, copies


def _readme(name: str, target: dict[str, Any], info: dict[str, Any]) -> str:
    steps = "\n".join(f"{i}. `{step}`" for i, step in enumerate(target["on_device"], 1))
    check = (
        "`edgetl engine build` refuses an engine whose predictions disagree with them"
        if target["runtime"] == "tensorrt"
        else "`edgetl predict` on them on the device should give the same labels"
    )
    engine = info.get("engine")
    engine_text = (
        f"\nEngine: {engine['options']['precision']} TensorRT engine for TensorRT {engine['tensorrt']} "
        f"({'strongly' if engine['strongly_typed'] else 'weakly'} typed), batch "
        f"{engine['options']['min_batch']}..{engine['options']['max_batch']} (opt {engine['options']['opt_batch']}), "
        f"workspace {engine['options']['workspace_mb']} MB.\n\nEquivalent trtexec command (`build_engine.sh`):\n\n"
        f"    {engine['trtexec']}\n"
        if engine
        else ""
    )
    candidates = info.get("candidates") or []
    candidates_text = (
        "\n## Which model runs: measured on the device\n\n"
        f"The build ships `{info['model']['file']}` ({info['model']['artifact']}); "
        + ", ".join(f"`{c['file']}` ({c['artifact']})" for c in candidates)
        + " passed the same checks on the build machine. Which is fastest on this device is for the device to "
        "measure: "
        "`edgetl bench . --select` times them here (interleaved) and records the fastest that agrees with the "
        "reference in `device.json`; `edgetl predict` and `edgetl.runtime.load` then use it.\n"
        if candidates
        else ""
    )
    return (
        f"# {name}: device bundle for {target['name']}\n\n{target['description']}. Software: {target['software']}.\n"
        f"{engine_text}\n## On the device\n\n{steps}\n{candidates_text}\n"
        f"Model input: `{info['model']['input_name']}` {info['model']['input_shape']} float32, preprocessed as in "
        f"`preprocessing.json`; output: logits in the order of `labels.txt`.\n"
        f"`reference/` holds {info['reference']['images']} val images and the logits `{info['model']['artifact']}` "
        f"produced for them on the build machine; {check}.\n"
        f"{_pixels_text(info['pixels_model'])}\n"
        "## Porting the model (C++, JavaScript, Kotlin, ...)\n\n"
        "`preprocessing.json` lists under `contract` every step in order with its arithmetic: EXIF orientation, "
        "colour management (embedded ICC profiles to sRGB), conversion to 8-bit RGB, PIL's antialiased resize "
        "with its fixed-point rounding, the half-to-even crop offset and float32 normalisation. A port that "
        "follows it gets the same tensors bit for bit. Check the two halves separately:\n\n"
        "1. preprocess `reference/NNN.*` and compare with `reference/inputs.npy` (float32, image order);\n"
        "2. run the model on `reference/inputs.npy` and compare with `reference/logits.npy`;\n\n"
        "`reference/reference.json` states the tolerances (`tolerances`), and "
        "`edgetl bundle verify . --inputs yours.npy --logits yours.npy` checks a port's files against them.\n\n"
        "## Integrity\n\n"
        "`bundle.json` lists every file of the bundle under `files` with its SHA-256. Before loading anything, "
        "check that each path is relative and stays inside this folder, and that each file's SHA-256 matches; "
        "`edgetl predict` and `edgetl bench` refuse a bundle that fails either check.\n"
    )


def _pixels_text(record: dict[str, Any]) -> str:
    if not record.get("made"):
        return f"\nNo in-graph preprocessing model: {record.get('reason')}.\n"
    measured = record["measured"]
    latency = measured.get("latency") or {}
    return (
        f"\n`{record['file']}` is the same model with its preprocessing as ONNX ops ({record['form']}): input "
        f"{record['input']}. On the build machine it agreed with the PIL path on {measured['agreement']}/"
        f"{measured['images']} val images (max |logit diff| {measured['max_abs_logit_diff']:.3g}) and took "
        f"{latency.get('pixels_model_ms', float('nan')):.2f} ms against {latency.get('model_ms', float('nan')):.2f} ms "
        f"for the model alone ({latency.get('cpu', 'this CPU')}, {latency.get('threads')} thread(s)). "
        f"`{record['reference_logits']}` holds its logits for the decoded reference images.\n"
    )


def compare_with_reference(logits: np.ndarray, reference: dict[str, Any], min_agreement: float) -> dict[str, Any]:
    """Top-1 agreement and max logit difference of `logits` against the bundle's reference logits."""
    expected = np.asarray([item["logits"] for item in reference["images"]], dtype=np.float32)
    labels = np.asarray([item["label"] for item in reference["images"]])
    agree = float((logits.argmax(axis=1) == expected.argmax(axis=1)).mean() * 100.0)
    return {
        "images": len(labels),
        "agreement": agree,
        "min_agreement": min_agreement,
        "max_abs_logit_diff": float(np.abs(logits - expected).max()),
        "correct": int((logits.argmax(axis=1) == labels).sum()),
        "reference_correct": int((expected.argmax(axis=1) == labels).sum()),
        "passed": agree >= min_agreement,
    }


def reference_batch(bundle: Bundle) -> np.ndarray:
    """The reference images, preprocessed on this device by the bundle's own preprocessing."""
    pre = bundle.preprocessing()
    return pre.batch(reference_images(bundle))


def reference_images(bundle: Bundle) -> list[Path]:
    """The reference images reference.json names, each checked to lie inside the bundle."""
    source = bundle.root / layout.BUNDLE_REFERENCE
    return [inside(bundle.root, item["file"], "reference image", source) for item in bundle.reference()["images"]]


def build_engine_in_bundle(
    bundle_dir: str | Path,
    log: Callable[[str], None] = print,
    workspace_mb: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """`edgetl engine build`: build model.engine from the bundle's ONNX, verify it, keep it only if it passes.

    The new engine is written under a temporary name; an earlier engine stays until the new one
    has passed verification.
    """
    from edgetl.backends.tensorrt.build import build_engine
    from edgetl.backends.tensorrt.options import EngineOptions
    from edgetl.backends.tensorrt.runner import TensorRTRunner

    bundle = read_bundle(bundle_dir)
    if bundle.engine_options is None:
        raise UserInputError(
            f"{bundle.root}: bundle for target {bundle.info['target']['name']} runs on "
            f"{bundle.runtime}; there is no TensorRT engine to build (use edgetl predict directly)"
        )
    options = dict(bundle.engine_options)
    if workspace_mb is not None:
        options["workspace_mb"] = workspace_mb
    if options.get("timing_cache"):
        options["timing_cache"] = str(inside(bundle.root, options["timing_cache"], "engine.options.timing_cache"))
    engine = bundle.engine_path
    if engine.is_file() and not force:
        log(f"{engine} exists; verifying it (pass --force to rebuild)")
        return verify_engine(bundle, engine, log)
    candidate = engine.with_name(engine.name + ".new")
    build_engine(bundle.model_path, candidate, EngineOptions.from_dict(options), log=log)
    sidecar = Path(str(candidate) + ".json")
    try:
        result = verify_engine(bundle, candidate, log, runner_type=TensorRTRunner)
    except VerificationError:
        candidate.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
        raise
    sidecar.replace(Path(str(engine) + ".json"))
    candidate.replace(engine)
    log(f"engine ready: {engine}")
    return result


def verify_engine(
    bundle: Bundle, engine: Path, log: Callable[[str], None] = print, runner_type: Any = None
) -> dict[str, Any]:
    """Run the reference images through `engine`; VerificationError (exit 4) when it disagrees."""
    if runner_type is None:
        from edgetl.backends.tensorrt.runner import TensorRTRunner as runner_type
    min_agreement = float(bundle.info.get("engine", {}).get("verify_min_agreement", 99.0))
    with runner_type(engine) as runner:
        logits = runner.infer_any_batch(reference_batch(bundle))
    result = compare_with_reference(logits, bundle.reference(), min_agreement)
    log(
        f"verified on {result['images']} reference images: agreement {result['agreement']:.1f}% "
        f"(min {min_agreement:.1f}%), max |logit diff| {result['max_abs_logit_diff']:.4f}, "
        f"{result['correct']}/{result['images']} correct (reference {result['reference_correct']})"
    )
    if not result["passed"]:
        raise VerificationError(
            f"{engine}: engine agrees with the ONNX reference on only {result['agreement']:.1f}% of the "
            f"reference images (minimum {min_agreement:.1f}%); the engine was not kept"
        )
    return result
