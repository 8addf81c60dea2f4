"""A corpus of bad input, each kind run through the real CLI (in process) or the data scan.

Every CLI case must end with the documented exit code (2 bad input, 5 run directory locked) and
exactly one stderr line `edgetl: error: ...` that names the offending file, field or argument and
says what was expected, without a traceback (only `--debug` shows one). Around every case, all
files under the test's folder (plus any shared folder the case reads) are snapshotted: nothing
may change except inside the run directory the case names, and the working directory (an empty
folder) must stay empty. Bad input given to a build over an earlier good run leaves that run's
published files byte-identical.

Kinds (the test ids):

* profiles: missing file, a directory, not UTF-8, YAML syntax error, not a mapping, empty file,
  duplicate key, Python YAML tag (never executed), unknown key (did-you-mean), wrong type, wrong
  literal (did-you-mean), impossible budget, missing required field, unsafe name, unknown
  backbone, a section that does not apply to the target
* data folders: missing root, a file as root, a named dataset not available offline, a single
  class, an empty class, a val class unknown to train, no class folders at all, missing root
  without output_dir (the default run directory under the working directory)
* run directories: output_dir is a file (--output-dir), under a file, a foreign non-empty folder,
  locked by a live process (exit 5), bad data and a corrupt weights file over an earlier good run
* weights files: missing, random bytes, a pickle that would run code (weights_only refuses it),
  pretrained weights not available offline
* arguments: unknown command, unknown option, missing argument, --top-k 0, a non-integer option,
  --percentile p5x, --percentile p95 (not recorded), --debug (the one way to get the traceback)
* predict: missing source, random-bytes ONNX, truncated ONNX, ONNX without edgetl metadata, image
  not found, image that is not an image, unknown --artifact, artefact not built, partial build,
  corrupt manifest.json, missing labels.txt, corrupt preprocessing.json, a model changed after the
  build (its hash no longer matches the manifest)
* bench / engine: run directory that is not a run, --baseline missing / not JSON / not a report,
  --output is a file, --junit is a folder, engine verify on a folder that is not a bundle, a
  corrupt or incomplete bundle.json
* image files (data scan, `IMAGE_CASES`): zero bytes, truncated JPEG, random bytes, hidden file,
  stray document, file outside the class folders, placeholder GIF, too small, decompression bomb,
  PNG named .jpg, PNG with alpha, CMYK JPEG, 16-bit grayscale PNG, EXIF-rotated JPEG
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from edgetl.files import sha256_file
from tests.helpers import (
    add_messy_files,
    deep_merge,
    make_dataset,
    make_image_folder,
    run_cli,
    tiny_profile,
    write_profile,
)

PUBLISHED = ("manifest.json", "report.json", "report.md", "labels.txt")  # and models/*.onnx


# -- harness -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One CLI invocation and what must come of it."""

    args: list[str]
    expect: tuple[str, ...]  # every fragment must appear in the error line
    code: int = 2
    run_dir: Path | None = None  # the one place allowed to change; None: nothing may change
    usage: bool = False  # an argument error found by the command-line parser: points at --help
    debug: bool = False  # --debug: the traceback is expected
    protect: tuple[Path, ...] = ()  # earlier published files that must stay byte-identical
    after: Callable[[], None] | None = None  # extra checks once the command has failed


@dataclass(frozen=True)
class Case:
    id: str
    arrange: Callable[[Env], Call]


@dataclass
class Env:
    """The case's folders, and lazy access to the session's finished tiny build."""

    base: Path
    request: pytest.FixtureRequest
    watched: list[Path] = field(default_factory=list)

    @property
    def run(self) -> Path:
        return self.base / "run"

    @property
    def built_run(self) -> Any:
        built = self.request.getfixturevalue("built_run")
        self.watch(built.run_dir)
        return built

    def watch(self, path: Path) -> None:
        """Also snapshot a folder outside the case's own (a shared fixture it reads)."""
        if path.resolve() not in self.watched:
            self.watched.append(path.resolve())

    def data(self, train: int = 3, val: int = 2, classes: tuple[str, ...] = ("reds", "blues")) -> Path:
        return make_dataset(self.base / "data", train=train, val=val, classes=classes)

    def profile(self, data_root: Path | None = None, name: str = "p.yaml", **overrides: Any) -> Path:
        root = data_root if data_root is not None else self.base / "data"
        return write_profile(self.base / name, tiny_profile(root, self.run, **overrides))

    def text(self, text: str, name: str = "p.yaml") -> Path:
        path = self.base / name
        path.write_text(text)
        return path

    def minimal(self, extra: str = "") -> Path:
        """A small valid profile, plus `extra` YAML lines."""
        return self.text(
            f"version: 1\nname: demo\noutput_dir: {self.run}\ndata:\n  root: {self.base / 'data'}\n{extra}"
        )

    def earlier_run(self, **overrides: Any) -> tuple[Path, tuple[Path, ...]]:
        """Copy the session build (cache included) to `run`; a profile for it with `overrides`."""
        shutil.copytree(self.built_run.run_dir, self.run)
        profile = yaml.safe_load((self.run / "profile.yaml").read_text())
        profile = deep_merge(profile, {"output_dir": str(self.run), **overrides})
        path = write_profile(self.base / "p.yaml", profile)
        models = sorted(self.run.glob("models/*.onnx"))
        published = [self.run / name for name in PUBLISHED] + models
        assert models and all(path.is_file() for path in published)
        return path, tuple(published)

    def model_files(self) -> Path:
        """The session build's published model, labels and preprocessing, copied to `copy/` (no cache)."""
        copy = self.base / "copy"
        shutil.copytree(self.built_run.run_dir, copy, ignore=shutil.ignore_patterns(".edgetl", "bundle", "bench"))
        return copy

    def image(self) -> Path:
        """A real val image of the session build's dataset."""
        split = json.loads((self.built_run.run_dir / "data/split.json").read_text())
        self.watch(Path(split["root"]))
        return Path(split["root"]) / split["val"][0][0]


def snapshot(roots: list[Path], exclude: Path | None) -> dict[str, tuple[int, ...]]:
    """Every file and folder under `roots`: files by size and mtime, folders by existence."""
    state: dict[str, tuple[int, ...]] = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            if exclude is not None and (path == exclude or exclude in path.parents):
                continue
            info = path.lstat()
            state[str(path)] = () if path.is_dir() and not path.is_symlink() else (info.st_size, info.st_mtime_ns)
    return state


def hashes(paths: tuple[Path, ...]) -> dict[Path, str]:
    return {path: sha256_file(path) for path in paths}


# -- profiles ----------------------------------------------------------------------------------

CASES: list[Case] = []


def case(arrange: Callable[[Env], Call]) -> Callable[[Env], Call]:
    CASES.append(Case(arrange.__name__.removeprefix("case_").replace("_", "-"), arrange))
    return arrange


@case
def case_profile_missing(env: Env) -> Call:
    path = env.base / "nope.yaml"
    return Call(["build", str(path)], (f"{path}: profile not found",))


@case
def case_profile_is_a_directory(env: Env) -> Call:
    folder = env.base / "profiles"
    folder.mkdir()
    return Call(["build", str(folder)], (str(folder), "is a directory, expected a profile .yaml file"))


@case
def case_profile_not_utf8(env: Env) -> Call:
    path = env.base / "p.yaml"
    path.write_bytes(b"\xff\xfe\x00\x89PNG\r\n\x1a\n\x00\x00")
    return Call(["validate", str(path)], (str(path), "not a text file (expected UTF-8 YAML)"))


@case
def case_yaml_syntax_error(env: Env) -> Call:
    path = env.text("version: 1\nname: demo\ndata:\n  root: [unclosed\n")
    return Call(["build", str(path)], (f"{path}:5:", "invalid YAML"))


@case
def case_profile_not_a_mapping(env: Env) -> Call:
    path = env.text("- data\n- finetune\n")
    return Call(["build", str(path)], (str(path), "must be a YAML mapping (key: value), got list"))


@case
def case_profile_empty(env: Env) -> Call:
    path = env.text("# nothing yet\n")
    return Call(["build", str(path)], (str(path), "must be a YAML mapping (key: value), got an empty file"))


@case
def case_duplicate_key(env: Env) -> Call:
    path = env.minimal("finetune:\n  epochs: 3\n  epochs: 5\n")
    return Call(["build", str(path)], (f"{path}:8:", "duplicate key 'epochs' (first on line 7)"))


@case
def case_yaml_python_tag_is_not_executed(env: Env) -> Call:
    marker = env.base / "pwned"
    path = env.text(f"version: 1\nname: demo\ndata:\n  root: !!python/object/apply:os.system ['touch {marker}']\n")

    def not_executed() -> None:
        assert not marker.exists()

    return Call(["build", str(path)], (f"{path}:4:", "invalid YAML", "python/object/apply"), after=not_executed)


@case
def case_unknown_key_suggests(env: Env) -> Call:
    path = env.minimal("optimize:\n  int8:\n    calibraton_images: 8\n")
    return Call(
        ["build", str(path)],
        (f"{path}:8: optimize.int8.calibraton_images: unknown key; did you mean 'calibration_images'?", "allowed keys"),
    )


@case
def case_wrong_type(env: Env) -> Call:
    path = env.minimal("finetune:\n  epochs: many\n")
    return Call(["build", str(path)], (f"{path}:7: finetune.epochs:", "valid integer", "(got 'many')"))


@case
def case_wrong_literal_target(env: Env) -> Call:
    path = env.minimal("target: jetsn-orin-nano\n")
    return Call(["build", str(path)], (f"{path}:6: target:", "did you mean 'jetson-orin-nano'", "jetsn-orin-nano"))


@case
def case_impossible_budget(env: Env) -> Call:
    path = env.minimal("budgets:\n  max_latency_ms: 0\n")
    return Call(["build", str(path)], (f"{path}:7: budgets.max_latency_ms:", "greater than 0", "(got 0)"))


@case
def case_required_field_missing(env: Env) -> Call:
    path = env.text(f"version: 1\noutput_dir: {env.run}\ndata:\n  root: {env.base / 'data'}\n")
    return Call(["build", str(path)], (f"{path}: name: required field is missing",))


@case
def case_unsafe_name(env: Env) -> Call:
    path = env.text(f"version: 1\nname: ../../escape\ndata:\n  root: {env.base / 'data'}\n")
    return Call(["build", str(path)], (f"{path}:2: name:", "should match pattern", "'../../escape'"))


@case
def case_unknown_backbone(env: Env) -> Call:
    path = env.minimal("backbone:\n  name: mobilenetv3_small\n")
    return Call(
        ["build", str(path)], (f"{path}:7: backbone.name:", "did you mean 'mobilenet_v3_small'?", "known backbones")
    )


@case
def case_section_not_for_target(env: Env) -> Call:
    path = env.minimal("tensorrt:\n  opt_batch: 4\n")
    return Call(["build", str(path)], (str(path), "tensorrt section applies to TensorRT targets", "x86-cpu"))


# -- data folders ------------------------------------------------------------------------------


@case
def case_data_root_missing(env: Env) -> Call:
    path = env.profile(env.base / "nothing")
    return Call(
        ["build", str(path), "--quiet"], ("data.root: folder not found", str(env.base / "nothing")), run_dir=env.run
    )


@case
def case_data_root_missing_without_output_dir(env: Env) -> Call:
    """The default run directory is ./runs/<name>: a refused build must not leave it behind."""
    profile = tiny_profile(env.base / "nothing", env.run)
    del profile["output_dir"]
    path = write_profile(env.base / "p.yaml", profile)
    return Call(["build", str(path), "--quiet"], ("data.root: folder not found",))


@case
def case_data_root_is_a_file(env: Env) -> Call:
    not_a_folder = env.text("just text", name="images.zip")
    path = env.profile(not_a_folder)
    return Call(["build", str(path), "--quiet"], ("data.root", str(not_a_folder)), run_dir=env.run)


@case
def case_named_dataset_offline(env: Env) -> Call:
    path = env.text(f"version: 1\nname: bees\noutput_dir: {env.run}\ndata:\n  source: hymenoptera\n")
    return Call(
        ["build", str(path), "--quiet"],
        ("dataset 'hymenoptera' not found locally and EDGETL_OFFLINE is set", "EDGETL_DATA_HOME"),
        run_dir=env.run,
    )


@case
def case_single_class(env: Env) -> Call:
    data = env.data(classes=("reds",))
    path = env.profile(data)
    return Call(
        ["build", str(path), "--quiet"],
        (str(data / "train"), "needs at least 2 class folders, found 1 (reds)", "layout: <root>/<class name>/<images>"),
        run_dir=env.run,
    )


@case
def case_class_without_usable_image(env: Env) -> Call:
    data = env.data()
    for image in (data / "train" / "blues").iterdir():
        image.write_bytes(b"")
    (data / "train" / "blues" / "notes.txt").write_text("no images here")
    path = env.profile(data)
    return Call(
        ["build", str(path), "--quiet"],
        (str(data / "train"), "class folder(s) with no usable image: blues"),
        run_dir=env.run,
    )


@case
def case_val_class_unknown_to_train(env: Env) -> Call:
    data = env.data()
    shutil.copytree(data / "val" / "reds", data / "val" / "greens")
    path = env.profile(data)
    return Call(
        ["build", str(path), "--quiet"],
        (str(data / "val"), "val class folder(s) greens have no train folder", "train classes: blues, reds"),
        run_dir=env.run,
    )


@case
def case_no_class_folders(env: Env) -> Call:
    data = env.base / "data"
    data.mkdir()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(data / "loose.jpg")
    path = env.profile(data)
    return Call(["build", str(path), "--quiet"], (str(data), "no class folders found"), run_dir=env.run)


# -- run directories ---------------------------------------------------------------------------


@case
def case_output_dir_is_a_file(env: Env) -> Call:
    env.data()
    target = env.text("my notes", name="notes.txt")
    path = env.profile()
    return Call(
        ["build", str(path), "--output-dir", str(target)], (f"output_dir {target} exists and is not a directory",)
    )


@case
def case_output_dir_under_a_file(env: Env) -> Call:
    env.data()
    notes = env.text("my notes", name="notes.txt")
    path = write_profile(env.base / "p.yaml", tiny_profile(env.base / "data", notes / "run"))
    return Call(["build", str(path)], (str(path), f"cannot be created: {notes} is a file, not a folder"))


@case
def case_output_dir_is_a_foreign_folder(env: Env) -> Call:
    env.data()
    foreign = env.base / "documents"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    path = write_profile(env.base / "p.yaml", tiny_profile(env.base / "data", foreign))
    return Call(
        ["build", str(path)],
        (str(foreign), "non-empty folder that is not an edgetl run directory", "choose an empty or new folder"),
    )


@case
def case_run_dir_locked_by_live_process(env: Env) -> Call:
    env.data()
    path = env.profile()
    lock = env.run / ".edgetl" / "lock"
    lock.parent.mkdir(parents=True)
    owner = os.getppid()  # alive for as long as this test runs
    lock.write_text(json.dumps({"pid": owner, "host": socket.gethostname(), "since": 0}))

    def lock_kept() -> None:
        assert json.loads(lock.read_text())["pid"] == owner

    return Call(
        ["build", str(path), "--quiet"],
        (str(env.run), f"process {owner} on {socket.gethostname()} is building into this run directory", str(lock)),
        code=5,
        after=lock_kept,
    )


@case
def case_bad_data_over_earlier_run(env: Env) -> Call:
    data = env.data(classes=("reds",))
    path, published = env.earlier_run(data={"root": str(data)})
    return Call(
        ["build", str(path), "--quiet"],
        ("needs at least 2 class folders, found 1",),
        run_dir=env.run,
        protect=published,
    )


@case
def case_corrupt_weights_over_earlier_run(env: Env) -> Call:
    weights = env.base / "weights.pt"
    weights.write_bytes(os.urandom(4096))
    path, published = env.earlier_run(backbone={"weights": str(weights)})
    return Call(
        ["build", str(path), "--quiet"],
        (f"{weights}: not a readable PyTorch weights file",),
        run_dir=env.run,
        protect=published,
    )


# -- weights files -----------------------------------------------------------------------------


@case
def case_weights_file_missing(env: Env) -> Call:
    env.data()
    weights = env.base / "missing.pth"
    path = env.profile(backbone={"weights": str(weights)})
    return Call(["build", str(path), "--quiet"], (f"backbone.weights: file not found: {weights}",), run_dir=env.run)


@case
def case_pretrained_weights_offline(env: Env) -> Call:
    env.data()
    path = env.profile(backbone={"name": "resnet18"})
    return Call(
        ["build", str(path), "--quiet"],
        ("pretrained weights for resnet18 not found locally and EDGETL_OFFLINE is set", "resnet18-f37072fd.pth"),
        run_dir=env.run,
    )


class _RunsCode:
    """Unpickling this would create a file: torch.load(weights_only=True) must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@case
def case_weights_pickle_with_code(env: Env) -> Call:
    import torch

    env.data()
    marker = env.base / "pwned"
    weights = env.base / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1), "payload": _RunsCode(marker)}, weights)
    path = env.profile(backbone={"weights": str(weights)})

    def not_executed() -> None:
        assert not marker.exists()

    return Call(
        ["build", str(path), "--quiet"],
        (f"{weights}: not a readable PyTorch weights file",),
        run_dir=env.run,
        after=not_executed,
    )


# -- arguments ---------------------------------------------------------------------------------


@case
def case_unknown_command(env: Env) -> Call:
    return Call(["frobnicate"], ("No such command 'frobnicate'",), usage=True)


@case
def case_unknown_option(env: Env) -> Call:
    path = env.minimal()
    return Call(["build", str(path), "--epochs", "3"], ("No such option: --epochs",), usage=True)


@case
def case_missing_argument(env: Env) -> Call:
    return Call(["predict"], ("Missing argument",), usage=True)


@case
def case_top_k_zero(env: Env) -> Call:
    return Call(["predict", str(env.base), "x.jpg", "--top-k", "0"], ("--top-k",), usage=True)


@case
def case_option_not_an_integer(env: Env) -> Call:
    return Call(
        ["engine", "build", str(env.base), "--workspace-mb", "lots"], ("--workspace-mb", "valid integer"), usage=True
    )


@case
def case_bench_bad_percentile(env: Env) -> Call:
    return Call(
        ["bench", str(env.base), "--percentile", "p5x"], ("latency percentile must be one that reports record", "'p5x'")
    )


@case
def case_bench_unrecorded_percentile(env: Env) -> Call:
    # Reports record p50, p90 and p99: p95 would skip every latency check and pass on nothing.
    return Call(["bench", str(env.base), "--percentile", "p95"], ("(p50, p90, p99)", "'p95'"))


@case
def case_debug_shows_traceback(env: Env) -> Call:
    path = env.base / "nope.yaml"
    return Call(["validate", str(path), "--debug"], (f"{path}: profile not found",), debug=True)


# -- predict -----------------------------------------------------------------------------------


@case
def case_predict_source_missing(env: Env) -> Call:
    source = env.base / "runs" / "nothing"
    return Call(["predict", str(source), "x.jpg"], (str(source), "no such run directory, bundle or model file"))


@case
def case_predict_random_bytes_onnx(env: Env) -> Call:
    model = env.base / "model.onnx"
    model.write_bytes(os.urandom(2048))
    return Call(["predict", str(model), "x.jpg"], (str(model), "ONNX Runtime cannot load the model"))


@case
def case_predict_truncated_onnx(env: Env) -> Call:
    model = env.base / "model.onnx"
    real = env.built_run.run_dir / "models" / "model_fp32.onnx"
    model.write_bytes(real.read_bytes()[: real.stat().st_size // 3])
    return Call(["predict", str(model), "x.jpg"], (str(model), "ONNX Runtime cannot load the model"))


@case
def case_predict_onnx_without_metadata(env: Env) -> Call:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = env.base / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(model))
    return Call(
        ["predict", str(model), "x.jpg"], (str(model), "not an edgetl model (no labels/preprocessing metadata)")
    )


@case
def case_predict_image_missing(env: Env) -> Call:
    image = env.base / "missing.jpg"
    return Call(["predict", str(env.built_run.run_dir), str(image)], (f"{image}: image not found",))


@case
def case_predict_image_not_an_image(env: Env) -> Call:
    image = env.text("definitely not pixels", name="cat.jpg")
    return Call(["predict", str(env.built_run.run_dir), str(image)], (f"{image}: cannot decode image",))


@case
def case_predict_unknown_artifact(env: Env) -> Call:
    return Call(
        ["predict", str(env.built_run.run_dir), str(env.image()), "--artifact", "onnx_int4"],
        ("artifact 'onnx_int4'", "choose from onnx_fp32, onnx_fp16, onnx_int8"),
    )


@case
def case_predict_artifact_not_built(env: Env) -> Call:
    run = env.built_run.run_dir
    return Call(
        ["predict", str(run), str(env.image()), "--artifact", "onnx_fp16"],
        (str(run / "models" / "model_fp16.onnx"), "model file missing from the run directory"),
    )


@case
def case_predict_partial_build(env: Env) -> Call:
    copy = env.model_files()
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    return Call(["predict", str(copy), str(env.image())], (str(copy), "partial build", "run edgetl build"))


@case
def case_predict_corrupt_manifest(env: Env) -> Call:
    copy = env.model_files()
    (copy / "manifest.json").write_text('{"complete": tr')
    return Call(["predict", str(copy), str(env.image())], (str(copy / "manifest.json"), "not valid JSON"))


@case
def case_predict_labels_missing(env: Env) -> Call:
    copy = env.model_files()
    (copy / "labels.txt").unlink()
    return Call(["predict", str(copy), str(env.image())], (str(copy / "labels.txt"), "missing"))


def _rehash(copy: Path, name: str) -> None:
    """Record `name`'s new hash in the run's manifest, so the reader itself (not the hash check) must refuse it."""
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][name]["sha256"] = sha256_file(copy / name)
    (copy / "manifest.json").write_text(json.dumps(manifest))


@case
def case_predict_model_with_external_data(env: Env) -> Call:
    import onnx

    copy = env.model_files()
    model = copy / "models" / "model_int8.onnx"
    onnx.save_model(onnx.load(model), model, save_as_external_data=True, location="weights.bin", size_threshold=0)
    _rehash(copy, "models/model_int8.onnx")  # the .onnx matches: its weights live in an unhashed file
    return Call(["predict", str(copy), str(env.image())], (str(model), "external data files", "cannot verify"))


@case
def case_predict_corrupt_preprocessing(env: Env) -> Call:
    copy = env.model_files()
    (copy / "preprocessing.json").write_text('{"resize": 256}')
    _rehash(copy, "preprocessing.json")  # the hash matches: the reader itself must refuse
    return Call(["predict", str(copy), str(env.image())], (str(copy / "preprocessing.json"), "crop"))


@case
def case_predict_nan_mean_in_preprocessing(env: Env) -> Call:
    copy = env.model_files()
    data = json.loads((copy / "preprocessing.json").read_text())
    (copy / "preprocessing.json").write_text(json.dumps({**data, "mean": [float("nan"), 0.4, 0.4]}))
    _rehash(copy, "preprocessing.json")
    return Call(["predict", str(copy), str(env.image())], (str(copy / "preprocessing.json"), "finite"))


@case
def case_predict_two_value_mean(env: Env) -> Call:
    copy = env.model_files()
    data = json.loads((copy / "preprocessing.json").read_text())
    (copy / "preprocessing.json").write_text(json.dumps({**data, "mean": [0.4, 0.4]}))
    _rehash(copy, "preprocessing.json")
    return Call(["predict", str(copy), str(env.image())], (str(copy / "preprocessing.json"), "3 values"))


@case
def case_predict_labels_do_not_match_the_outputs(env: Env) -> Call:
    copy = env.model_files()
    labels = (copy / "labels.txt").read_text().splitlines()
    (copy / "labels.txt").write_text("\n".join([*labels, "extra1", "extra2"]) + "\n")
    _rehash(copy, "labels.txt")
    return Call(["predict", str(copy), str(env.image())], (f"{len(labels)} outputs", f"{len(labels) + 2} classes"))


@case
def case_predict_model_entry_deleted_from_the_manifest(env: Env) -> Call:
    copy = env.model_files()
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"].pop("models/model_int8.onnx")  # deleting the entry must not switch the check off
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return Call(["predict", str(copy), str(env.image())], (str(copy / "models/model_int8.onnx"), "not listed"))


@case
def case_predict_model_changed_after_the_build(env: Env) -> Call:
    copy = env.model_files()
    model = copy / "models" / "model_int8.onnx"
    model.write_bytes(model.read_bytes() + b"\0")  # still loads, but is not the model that was measured
    return Call(["predict", str(copy), str(env.image())], (str(model), "does not match manifest.json"))


# -- bench and engine --------------------------------------------------------------------------


@case
def case_bench_not_a_run_dir(env: Env) -> Call:
    folder = env.base / "somewhere"
    folder.mkdir()
    return Call(["bench", str(folder)], (str(folder), "not an edgetl run directory (manifest.json missing)"))


@case
def case_bench_baseline_missing(env: Env) -> Call:
    copy = env.model_files()
    baseline = env.base / "baseline.json"
    return Call(
        ["bench", str(copy), "--baseline", str(baseline)], (f"report file {baseline} not found", "edgetl build")
    )


@case
def case_bench_baseline_not_json(env: Env) -> Call:
    copy = env.model_files()
    baseline = env.text("<html>502 Bad Gateway</html>", name="baseline.json")
    return Call(
        ["bench", str(copy), "--baseline", str(baseline)], (f"report file {baseline} is not valid JSON", "line 1")
    )


@case
def case_bench_baseline_not_a_report(env: Env) -> Call:
    copy = env.model_files()
    baseline = env.text('{"accuracy": 97.5}', name="baseline.json")
    return Call(
        ["bench", str(copy), "--baseline", str(baseline), "--no-measure"],
        (f"report file {baseline} is not an edgetl report (no 'schema' field)",),
    )


@case
def case_bench_output_is_a_file(env: Env) -> Call:
    copy = env.model_files()
    output = env.text("keep me", name="results.csv")
    return Call(["bench", str(copy), "--output", str(output)], (str(output), "exists and is not a folder"))


@case
def case_bench_junit_is_a_folder(env: Env) -> Call:
    copy = env.model_files()
    return Call(
        ["bench", str(copy), "--baseline", str(copy), "--junit", str(env.base)],
        (f"--junit {env.base}: is a folder, expected the path of an XML file",),
    )


@case
def case_bench_junit_under_a_file(env: Env) -> Call:
    copy = env.model_files()
    blocker = env.text("a file, not a folder", name="reports")
    target = blocker / "bench.xml"
    return Call(
        ["bench", str(copy), "--baseline", str(copy), "--junit", str(target)], (str(blocker), "Not a directory")
    )


@case
def case_engine_verify_not_a_bundle(env: Env) -> Call:
    folder = env.base / "bundle"
    folder.mkdir()
    return Call(["engine", "verify", str(folder)], (str(folder), "not an edgetl device bundle (bundle.json missing)"))


@case
def case_engine_verify_corrupt_bundle_json(env: Env) -> Call:
    folder = env.base / "bundle"
    folder.mkdir()
    (folder / "bundle.json").write_text("{truncated")
    return Call(["engine", "verify", str(folder)], (str(folder / "bundle.json"), "unreadable"))


@case
def case_engine_verify_incomplete_bundle_json(env: Env) -> Call:
    folder = env.base / "bundle"
    folder.mkdir()
    (folder / "bundle.json").write_text(json.dumps({"schema": "edgetl.bundle/1", "name": "x"}))
    return Call(["engine", "verify", str(folder)], (str(folder / "bundle.json"), "model"))


@case
def case_engine_verify_bundle_files_as_a_list(env: Env) -> Call:
    folder = env.base / "bundle"
    folder.mkdir()
    info = {
        "schema": "edgetl.bundle/1",
        "model": {"file": "model.onnx", "artifact": "onnx_int8"},
        "target": {"name": "x86-cpu", "runtime": "onnxruntime"},
        "files": ["model.onnx", "labels.txt"],
    }
    (folder / "bundle.json").write_text(json.dumps(info))
    return Call(["engine", "verify", str(folder)], (str(folder / "bundle.json"), "files must map file names"))


def _bundle(env: Env) -> Path:
    """A copy of the session build's device bundle."""
    folder = env.base / "bundle"
    shutil.copytree(env.built_run.run_dir / "bundle", folder)
    return folder


def _edit_reference(bundle: Path, edit: Callable[[dict], None]) -> Path:
    """Edit reference/reference.json and record its new hash, so the reader itself (not the hash check) must refuse."""
    path = bundle / "reference" / "reference.json"
    reference = json.loads(path.read_text())
    edit(reference)
    path.write_text(json.dumps(reference))
    info = json.loads((bundle / "bundle.json").read_text())
    info["files"]["reference/reference.json"] = sha256_file(path)
    (bundle / "bundle.json").write_text(json.dumps(info))
    return path


@case
def case_bench_bundle_without_reference_images(env: Env) -> Call:
    bundle = _bundle(env)
    path = _edit_reference(bundle, lambda reference: reference.update(images=[]))
    return Call(["bench", str(bundle)], (str(path), "images must be a non-empty list"))


@case
def case_bench_bundle_reference_label_not_an_integer(env: Env) -> Call:
    bundle = _bundle(env)
    path = _edit_reference(bundle, lambda reference: reference["images"][0].update(label="bees"))
    return Call(["bench", str(bundle)], (str(path), "images[0].label must be a class index"))


@case
def case_bench_bundle_reference_image_outside(env: Env) -> Call:
    bundle = _bundle(env)
    outside = env.text("not yours", name="secret.jpg")
    path = _edit_reference(bundle, lambda reference: reference["images"][0].update(file=f"../{outside.name}"))
    return Call(["bench", str(bundle)], (str(path), "reference image", "points outside the bundle"))


@case
def case_bench_bundle_empty_engine_sidecar(env: Env) -> Call:
    bundle = _bundle(env)
    (bundle / "model.engine").write_bytes(b"not an engine")
    (bundle / "model.engine.json").write_text("{}")
    return Call(["bench", str(bundle)], (str(bundle / "model.engine.json"), "schema None"))


def _edit_manifest(copy: Path, edit: Callable[[dict], Any]) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(edit(manifest)))


@case
def case_bench_manifest_not_a_mapping(env: Env) -> Call:
    copy = env.model_files()
    _edit_manifest(copy, lambda manifest: [manifest])
    return Call(["bench", str(copy)], (str(copy / "manifest.json"), "not an edgetl manifest"))


@case
def case_bench_manifest_without_profile(env: Env) -> Call:
    copy = env.model_files()
    _edit_manifest(copy, lambda manifest: {key: value for key, value in manifest.items() if key != "profile"})
    return Call(["bench", str(copy)], (str(copy / "manifest.json"), "profile.resolved missing"))


@case
def case_bench_manifest_profile_damaged(env: Env) -> Call:
    copy = env.model_files()

    def damage(manifest: dict) -> dict:
        manifest["profile"]["resolved"]["finetune"]["epochs"] = "many"
        return manifest

    _edit_manifest(copy, damage)
    return Call(["bench", str(copy)], (str(copy / "manifest.json"), "profile.resolved.finetune.epochs"))


# -- the CLI test ------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Env:
    """An empty working directory, and every cache and temporary folder inside the watched folder."""
    base = tmp_path.resolve()
    for name in ("cwd", "home/cache", "home/torch", "home/xdg", "home/tmp"):
        (base / name).mkdir(parents=True)
    monkeypatch.chdir(base / "cwd")
    monkeypatch.setenv("EDGETL_CACHE_DIR", str(base / "home/cache"))
    monkeypatch.setenv("TORCH_HOME", str(base / "home/torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "home/xdg"))
    monkeypatch.setattr(tempfile, "tempdir", str(base / "home/tmp"))
    return Env(base=base, request=request, watched=[base])


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_line_and_writes_nothing_outside_the_run(
    bad: Case, env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    call = bad.arrange(env)
    capsys.readouterr()
    protected = hashes(call.protect)
    before = snapshot(env.watched, call.run_dir)

    code, out, err = run_cli(call.args, capsys)

    assert code == call.code, err
    for fragment in call.expect:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    if call.debug:
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith("edgetl: error: ")
    else:
        assert "Traceback" not in err + out
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgetl: error: "), err
        assert out == ""
    if call.usage:
        assert "--help" in err, "a usage error says where the help is"
    assert snapshot(env.watched, call.run_dir) == before, "written outside the run directory"
    assert not any((env.base / "cwd").iterdir()), "written into the working directory"
    assert hashes(call.protect) == protected, "the earlier run's published files changed"
    if call.after is not None:
        call.after()


# -- image files -------------------------------------------------------------------------------

EXTENSIONS = [".jpg", ".jpeg", ".png", ".gif"]


@dataclass(frozen=True)
class ImageCase:
    id: str
    name: str  # file name inside the class folder (or relative to the train root)
    make: Callable[[Path], None] | None  # None: made by tests.helpers.add_messy_files
    reason: str | None = None  # skipped with this reason fragment; None: kept
    check: Callable[[Image.Image], None] | None = None  # on the decoded RGB image, for kept files
    recorded: tuple[str, str] | None = None  # (format, mode) the scan records for kept files


def _noise(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _make_alpha(path: Path) -> None:
    rgba = np.dstack([_noise((48, 40)), np.full((40, 48), 255, np.uint8)])
    rgba[:10, :, 3] = 0  # a transparent top band, as in a cut-out product photo
    Image.fromarray(rgba, "RGBA").save(path)


def _check_alpha(image: Image.Image) -> None:
    assert image.mode == "RGB" and image.size == (48, 40)
    assert image.getpixel((5, 2)) == (255, 255, 255), "transparent pixels must be composited on white"


def _make_cmyk(path: Path) -> None:
    rgb = _noise((48, 40), seed=2)
    rgb[10:30, 14:34] = (200, 40, 40)  # a red patch to check the colour conversion
    Image.fromarray(rgb).convert("CMYK").save(path, "JPEG", quality=95)


def _check_cmyk(image: Image.Image) -> None:
    red, green, blue = image.getpixel((24, 20))
    assert image.mode == "RGB" and red > 150 and green < 90 and blue < 90, (red, green, blue)


def _make_gray16(path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 48), (40, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(path)


def _check_gray16(image: Image.Image) -> None:
    row = [image.getpixel((x, 5))[0] for x in (0, 24, 47)]
    assert image.mode == "RGB" and row[0] == 0 and 110 < row[1] < 145 and row[2] == 255, row  # scaled, not clipped


def _make_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the camera was held upright
    Image.fromarray(_noise((64, 40), seed=3)).save(path, "JPEG", exif=exif)


def _check_rotated(image: Image.Image) -> None:
    assert image.size == (40, 64), "EXIF orientation must be applied"


def _make_png_named_jpg(path: Path) -> None:
    Image.fromarray(_noise((48, 40), seed=4)).save(path, "PNG")


def _make_bomb(path: Path) -> None:
    """A PNG header claiming 40000 x 40000 pixels (Pillow's bomb check refuses it before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


IMAGE_CASES = [
    ImageCase("zero-byte-jpeg", "empty.jpg", None, "empty file (0 bytes)"),
    ImageCase("truncated-jpeg", "truncated.jpg", None, "corrupt image"),
    ImageCase("random-bytes-png", "fake.png", None, "not a decodable image"),
    ImageCase("hidden-file", ".DS_Store", None, "hidden file, ignored"),
    ImageCase("document-in-class-folder", "notes.txt", None, "extension '.txt' is not an image type"),
    ImageCase("placeholder-gif", "placeholder.gif", None, "placeholder image"),
    ImageCase("too-small", "tiny.png", None, "too small (8x8 px, minimum 16)"),
    ImageCase(
        "file-outside-class-folders", "../README.txt", lambda p: p.write_text("about"), "outside any class folder"
    ),
    ImageCase("hidden-folder", ".thumbs/000.jpg", _make_png_named_jpg, "hidden file, ignored"),
    ImageCase("decompression-bomb", "bomb.png", _make_bomb, "refused"),
    ImageCase("png-named-jpg", "really-a-png.jpg", _make_png_named_jpg, recorded=("PNG", "RGB")),
    ImageCase("png-with-alpha", "alpha.png", _make_alpha, check=_check_alpha, recorded=("PNG", "RGBA")),
    ImageCase("cmyk-jpeg", "cmyk.jpg", _make_cmyk, check=_check_cmyk, recorded=("JPEG", "CMYK")),
    ImageCase("gray16-png", "gray16.png", _make_gray16, check=_check_gray16, recorded=("PNG", "I;16")),
    ImageCase("exif-rotated-jpeg", "rotated.jpg", _make_rotated, check=_check_rotated, recorded=("JPEG", "RGB")),
]


@pytest.fixture(scope="module")
def messy_scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One folder with every bad image kind next to good images, scanned once."""
    from edgetl.data.check import scan_folder

    root = make_image_folder(tmp_path_factory.mktemp("messy") / "train", {"reds": 4, "blues": 4})
    add_messy_files(root / "reds")
    for kind in IMAGE_CASES:
        path = root / "reds" / kind.name
        if kind.make is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            kind.make(path)
    before = snapshot([root], None)
    scan = scan_folder(root, EXTENSIONS)
    assert snapshot([root], None) == before, "the data scan wrote into the data folder"
    return root, scan


@pytest.mark.parametrize("kind", IMAGE_CASES, ids=[c.id for c in IMAGE_CASES])
def test_bad_image_is_reported_or_converted(kind: ImageCase, messy_scan: tuple[Path, Any]) -> None:
    from edgetl.preprocessing import load_image

    root, scan = messy_scan
    rel = (Path("reds") / kind.name).as_posix().replace("reds/../", "")
    problems = {p.rel: p for p in scan.problems}
    kept = {r.rel: r for r in scan.images}
    if kind.reason is not None:
        assert rel in problems, f"{rel} not reported; problems: {sorted(problems)}"
        assert kind.reason in problems[rel].reason and problems[rel].action == "skipped", problems[rel]
        assert rel not in kept
        return
    assert rel in kept, f"{rel} skipped: {problems.get(rel)}"
    assert rel not in problems
    if kind.recorded is not None:
        assert (kept[rel].format, kept[rel].mode) == kind.recorded
    decoded = load_image(root / rel)
    assert decoded.mode == "RGB"
    if kind.check is not None:
        kind.check(decoded)


def test_good_images_survive_the_messy_folder(messy_scan: tuple[Path, Any]) -> None:
    _, scan = messy_scan
    assert scan.counts() == {"blues": 4, "reds": 4 + sum(1 for k in IMAGE_CASES if k.reason is None)}


def test_the_corpus_is_big_enough() -> None:
    ids = [c.id for c in CASES] + [c.id for c in IMAGE_CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(CASES) >= 15 and len(IMAGE_CASES) >= 10
    assert len(ids) >= 18
