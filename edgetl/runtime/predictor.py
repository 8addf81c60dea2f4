"""Load a built model (run directory or a single ONNX file) and classify images, without torch."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgetl import layout
from edgetl.backends import ARTIFACTS, backend_for
from edgetl.backends.base import Runner
from edgetl.backends.onnxruntime.runner import OnnxRuntimeRunner
from edgetl.errors import ModelFileError, UserInputError, first_line
from edgetl.layout import METADATA_LABELS, METADATA_PREPROCESSING
from edgetl.preprocessing import Preprocessing, read_preprocessing

# Artefacts a device can load from a run directory (everything but the training checkpoint) -> file.
MODEL_FILES = {name: a.file for name, a in ARTIFACTS.items() if a.backend != "torch"}


@dataclass(frozen=True)
class Prediction:
    """One label for one image: its name, its index in labels.txt and its probability."""

    label: str
    index: int
    score: float  # softmax probability


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class Predictor:
    """Preprocessing + runner + labels: what an application embeds."""

    def __init__(self, runner: Runner, preprocessing: Preprocessing, labels: list[str]) -> None:
        self.runner = runner
        self.preprocessing = preprocessing
        self.labels = labels
        self.runner.activate()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw class scores for a batch already preprocessed as `self.preprocessing` says (softmax: probabilities)."""
        logits = self.runner.infer_any_batch(batch)
        if logits.ndim != 2 or logits.shape[-1] != len(self.labels):
            # A model and labels from different builds would name every class wrong, silently.
            raise ModelFileError(
                f"the model gives {logits.shape[-1] if logits.ndim else 0} outputs per image but its labels name "
                f"{len(self.labels)} classes: model and labels.txt come from different builds"
            )
        return logits

    def predict(self, images: list[str | Path | Image.Image | np.ndarray], top_k: int = 1) -> list[list[Prediction]]:
        """Classify image files, PIL images or HWC uint8 RGB arrays."""
        arrays = [self.preprocessing(_as_image(item, self.preprocessing)) for item in images]
        if not arrays:
            return []
        probabilities = softmax(self.logits(np.stack(arrays)))
        results = []
        for row in probabilities:
            order = np.argsort(-row)[: max(1, top_k)]
            results.append([Prediction(self.labels[i], int(i), float(row[i])) for i in order])
        return results

    def predict_stream(
        self, paths: Iterable[Path], top_k: int = 1, batch_size: int = 32
    ) -> Iterator[tuple[Path, list[Prediction]]]:
        """Predictions for image files, `batch_size` at a time: memory stays bounded however many there are."""
        batch: list[Path] = []
        for path in paths:
            batch.append(path)
            if len(batch) == batch_size:
                yield from zip(batch, self.predict(list(batch), top_k=top_k), strict=True)
                batch.clear()
        if batch:
            yield from zip(batch, self.predict(list(batch), top_k=top_k), strict=True)

    def close(self) -> None:
        self.runner.deactivate()


def iter_image_paths(inputs: Iterable[str | Path], extensions: Iterable[str]) -> Iterator[Path]:
    """Image files from files, folders (every image under them, sorted) and glob patterns, lazily.

    A folder's non-image files are passed over; a named file is taken as given (its decoding says whether
    it is an image). A pattern that matches nothing, or a path that does not exist, is an error.
    """
    wanted = {e.lower() for e in extensions}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for folder, subfolders, files in os.walk(path):
                subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and Path(name).suffix.lower() in wanted:
                        yield Path(folder) / name
        elif path.exists() or not glob.has_magic(str(item)):
            yield path
        else:
            matches = sorted(glob.glob(str(item), recursive=True))
            if not matches:
                raise UserInputError(f"{item}: no file matches this pattern")
            yield from iter_image_paths(matches, wanted)


def _as_image(item: str | Path | Image.Image | np.ndarray, pre: Preprocessing) -> Image.Image:
    """Files are decoded by the model's own policy (orientation, colour); arrays and PIL images are taken as RGB."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
            raise UserInputError(f"expected an HxWx3 uint8 RGB array, got shape {item.shape} dtype {item.dtype}")
        return Image.fromarray(item, mode="RGB")
    path = Path(item)
    if path.is_dir():
        raise UserInputError(f"{path}: is a folder, not an image (give the folder to `edgetl predict` to read all)")
    if not path.is_file():
        raise UserInputError(f"{path}: image not found" if not path.exists() else f"{path}: not a regular file")
    try:
        return pre.decode(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UserInputError(f"{path}: cannot decode image ({error})") from None


def _read_onnx_metadata(path: Path) -> dict[str, str]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ModelFileError(f"{path}: ONNX Runtime cannot load the model ({first_line(error)})") from None
    return dict(session.get_modelmeta().custom_metadata_map)


def _load_bundle(path: Path, artifact: str | None, threads: int | None) -> Predictor:
    """A device bundle: its TensorRT engine for TensorRT targets, else (or with artifact="model") its model."""
    from edgetl.bundle import read_bundle

    bundle = read_bundle(path)
    candidates = bundle.candidates()
    if artifact is None:
        artifact = bundle.device_choice()  # what `edgetl bench BUNDLE --select` chose on this device, if it ran
    if artifact == bundle.info["model"]["artifact"]:
        artifact = "model"
    if artifact in candidates:
        runner: Runner = backend_for(artifact).make_runner(
            candidates[artifact], artifact, threads, verified=bundle.verified
        )
        return Predictor(runner, bundle.preprocessing(), bundle.labels())
    if artifact not in (None, "onnx", "model", "engine"):
        raise UserInputError(
            f"artifact {artifact!r}: a bundle holds 'model' (alias 'onnx'), once built 'engine'"
            + (f", and the candidates {', '.join(sorted(candidates))}" if candidates else "")
        )
    use_engine = artifact == "engine" or (artifact is None and bundle.runtime == "tensorrt")
    if use_engine:
        if not bundle.engine_path.is_file():
            raise ModelFileError(
                f"{bundle.engine_path}: no engine yet; build it on this device with `edgetl engine build {path}` "
                f"(or pass --artifact model to run the ONNX model with ONNX Runtime)"
            )
        from edgetl.backends.tensorrt.runner import TensorRTRunner

        runner = TensorRTRunner(bundle.engine_path, name="engine")
    else:
        name = bundle.info["model"]["artifact"]
        runner = backend_for(name).make_runner(bundle.model_path, name, threads, verified=bundle.verified)
    return Predictor(runner, bundle.preprocessing(), bundle.labels())


def _load_engine_file(path: Path, threads: int | None) -> Predictor:
    """A bare engine file inside a bundle or run directory: labels and preprocessing come from the folder."""
    from edgetl.backends.tensorrt.runner import TensorRTRunner

    folder = path.parent
    if not (folder / layout.LABELS).is_file() or not (folder / layout.PREPROCESSING).is_file():
        raise ModelFileError(
            f"{path}: {layout.LABELS} and {layout.PREPROCESSING} must sit next to the engine (a bundle does)"
        )
    labels = _read_labels(folder / layout.LABELS)
    preprocessing = read_preprocessing(folder / layout.PREPROCESSING)
    return Predictor(TensorRTRunner(path, name="engine"), preprocessing, labels)


def load(source: str | os.PathLike[str], artifact: str | None = None, threads: int | None = None) -> Predictor:
    """Open a run directory (default: its deployed artefact), a device bundle, an engine or an edgetl ONNX file."""
    path = Path(source)
    if path.is_file() and path.suffix not in (".engine", ".plan"):
        metadata = _read_onnx_metadata(path)
        if METADATA_LABELS not in metadata or METADATA_PREPROCESSING not in metadata:
            raise ModelFileError(f"{path}: not an edgetl model (no labels/preprocessing metadata)")
        try:
            labels = json.loads(metadata[METADATA_LABELS])
            preprocessing = Preprocessing.from_dict(json.loads(metadata[METADATA_PREPROCESSING]))
        except (ValueError, KeyError, TypeError) as error:
            raise ModelFileError(f"{path}: damaged edgetl metadata ({error.__class__.__name__}: {error})") from None
        return Predictor(OnnxRuntimeRunner(path, threads=threads), preprocessing, labels)
    if path.is_file() and path.suffix in (".engine", ".plan"):
        return _load_engine_file(path, threads)
    if not path.is_dir():
        raise UserInputError(f"{path}: no such run directory, bundle or model file")
    if (path / layout.BUNDLE_INFO).is_file():
        return _load_bundle(path, artifact, threads)
    manifest_path = path / layout.MANIFEST
    if not manifest_path.is_file():
        raise ModelFileError(f"{path}: not a finished edgetl run (manifest.json missing)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{manifest_path}: not valid JSON ({error}); rebuild the run with edgetl build") from None
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{manifest_path}: not an edgetl manifest (top level is not an object)")
    if not manifest.get("complete", True):
        raise ModelFileError(f"{path}: holds a partial build (edgetl train); run edgetl build to export a model")
    name = artifact or manifest.get("deployed_artifact", "onnx_fp32")
    if name not in MODEL_FILES:
        raise UserInputError(f"artifact {name!r} cannot be loaded by the runtime; choose from {', '.join(MODEL_FILES)}")
    model_path = path / MODEL_FILES[name]
    if not model_path.is_file():
        raise ModelFileError(f"{model_path}: model file missing from the run directory")
    files = [MODEL_FILES[name], *ARTIFACTS[name].companions, layout.LABELS, layout.PREPROCESSING]
    verified = _check_against_manifest(path, manifest, files)
    labels = _read_labels(path / layout.LABELS)
    preprocessing = read_preprocessing(path / layout.PREPROCESSING)
    # The bytes that were hashed are the bytes that run: swapping the file after the check changes nothing.
    in_memory = {path / relative: data for relative, data in verified.items()}
    runner = backend_for(name).make_runner(model_path, name, threads, verified=in_memory)
    return Predictor(runner, preprocessing, labels)


def _check_against_manifest(run: Path, manifest: dict, relatives: list[str]) -> dict[str, bytes]:
    """The files a prediction depends on must be the ones the manifest (the build's commit point) lists.

    A mismatch means the file was edited or replaced after the build, or a build was stopped while
    publishing: either way the model is not the one that was measured. A file the manifest does not
    list is refused too (deleting its entry must not switch the check off). Returns the bytes that
    were hashed, so the caller can run exactly those.
    """
    files = manifest.get("files")
    if files is None and "schema" not in manifest:
        return {}  # manifests before edgetl.manifest/1 had no hashes
    if not isinstance(files, dict):
        raise ModelFileError(f"{run / layout.MANIFEST}: 'files' is not a mapping; rerun edgetl build")
    checked: dict[str, bytes] = {}
    for relative in relatives:
        target = run / relative
        if not target.is_file():
            continue  # the caller says what is missing
        entry = files.get(relative)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise ModelFileError(
                f"{target}: not listed in manifest.json, so it cannot be checked; rerun edgetl build to restore "
                "the run directory"
            )
        data = target.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ModelFileError(
                f"{target}: does not match manifest.json (changed after the build, or a build was "
                "interrupted while publishing); rerun edgetl build to restore the run directory"
            )
        checked[relative] = data
    return checked


def _read_labels(path: Path) -> list[str]:
    """labels.txt of a run directory or bundle: one class name per line, in output order."""
    try:
        labels = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing; copy the whole run directory (labels name the outputs)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{path}: unreadable ({error})") from None
    if not labels:
        raise ModelFileError(f"{path}: empty, expected one class name per line")
    return labels
