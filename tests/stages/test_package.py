"""Device bundles: what the package stage writes, how the runtime opens it, and how engines are verified."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgetl import layout
from edgetl.backends.onnxruntime.runner import OnnxRuntimeRunner
from edgetl.bundle import build_engine_in_bundle, compare_with_reference, read_bundle
from edgetl.cli import main
from edgetl.errors import ModelFileError, UserInputError, VerificationError
from edgetl.files import sha256_file
from edgetl.runtime import load
from tests.helpers import tiny_profile, write_profile


def test_cpu_build_ships_a_bundle_of_the_deployed_model(built_run) -> None:
    bundle = read_bundle(built_run.run_dir / "bundle")
    assert bundle.info["target"]["name"] == "x86-cpu" and bundle.runtime == "onnxruntime"
    assert bundle.info["model"]["artifact"] == "onnx_int8"
    assert sha256_file(bundle.model_path) == sha256_file(built_run.run_dir / "models/model_int8.onnx")
    assert bundle.labels() == ["blues", "reds"]
    assert "engine" not in bundle.info and not (bundle.root / layout.BUNDLE_BUILD_SCRIPT).exists()
    reference = bundle.reference()
    assert len(reference["images"]) == 10  # every val image of the tiny set (fewer than verify_images)
    assert {item["label"] for item in reference["images"]} == {0, 1}
    assert "edgetl predict BUNDLE_DIR image.jpg" in (bundle.root / "README.md").read_text()


def test_runtime_on_the_bundle_reproduces_the_reference_logits(built_run) -> None:
    bundle = read_bundle(built_run.run_dir / "bundle")
    predictor = load(bundle.root)
    try:
        images = [bundle.root / item["file"] for item in bundle.reference()["images"]]
        results = predictor.predict(images)
        logits = predictor.logits(bundle.preprocessing().batch(images))
    finally:
        predictor.close()
    check = compare_with_reference(logits, bundle.reference(), min_agreement=100.0)
    assert check["passed"] and check["max_abs_logit_diff"] < 1e-4
    assert [r[0].index for r in results] == list(logits.argmax(axis=1))


@pytest.fixture(scope="module")
def jetson_run(built_run, tmp_path_factory: pytest.TempPathFactory):
    """The tiny build re-targeted at a Jetson: data, training and export are reused from the cache."""
    from edgetl.console import Log
    from edgetl.pipeline import build

    base = tmp_path_factory.mktemp("jetson")
    shutil.copytree(built_run.run_dir, base / "run")
    data_root = Path(
        json.loads((built_run.run_dir / "manifest.json").read_text())["profile"]["resolved"]["data"]["root"]
    )
    profile = tiny_profile(
        data_root,
        base / "run",
        target="jetson-orin-nano",
        # No accuracy-aware search: it would cost a minute here, and test_accuracy_aware covers it.
        optimize={
            "int8": {
                "calibration_images": 8,
                "activation_type": "int8",
                "keep_float": [],
                "accuracy_aware": {"enabled": False},
            }
        },
        tensorrt={"opt_batch": 2, "max_batch": 4},
        benchmark={"memory": False, "compute_peak": False, "batch_sizes": [1]},
    )
    return build(write_profile(base / "jetson.yaml", profile), log=Log(quiet=True))


def test_jetson_bundle_carries_engine_options_and_the_trtexec_command(jetson_run) -> None:
    assert jetson_run.results["data"].skipped and jetson_run.results["finetune"].skipped
    bundle = read_bundle(jetson_run.run_dir / "bundle")
    options = bundle.engine_options
    assert options is not None
    assert (options["precision"], options["min_batch"], options["opt_batch"], options["max_batch"]) == ("int8", 1, 2, 4)
    assert options["workspace_mb"] == 1024  # the Orin Nano default: builds must fit in 8 GB shared memory
    script = (bundle.root / layout.BUNDLE_BUILD_SCRIPT).read_text()
    assert "trtexec --onnx=model.onnx --saveEngine=model.engine --fp16 --int8" in script
    assert "--minShapes=input:1x3x128x128 --optShapes=input:2x3x128x128 --maxShapes=input:4x3x128x128" in script
    summary = jetson_run.results["package"].summary
    assert summary.engine is None and "must be built on the device" in summary.engine_not_built
    report = (jetson_run.run_dir / "report.md").read_text()
    assert "## Deployment" in report and "run `edgetl bench <bundle>` on the device" in report


def test_tensorrt_int8_model_is_symmetric_with_qdq_on_compute_inputs_only(jetson_run) -> None:
    model = onnx.load(jetson_run.run_dir / "models/model_int8.onnx")
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize
    for node in quantize:
        zero_point = initializers[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    q_outputs = {n.output[0] for n in quantize}
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in q_outputs}
    for tensor in dequantized:  # every int8 activation is there for a compute op, never just for ReLU6
        readers = {n.op_type for n in model.graph.node if tensor in n.input}
        assert readers & {"Conv", "Gemm", "MatMul"} and "Clip" not in readers, (tensor, readers)
    record = json.loads((jetson_run.run_dir / "optimize/quantization.json").read_text())
    assert record["symmetric"] is True


def test_engine_targets_need_an_engine_or_an_explicit_onnx_choice(jetson_run, capsys) -> None:
    bundle_dir = jetson_run.run_dir / "bundle"
    with pytest.raises(ModelFileError, match="edgetl engine build"):
        load(bundle_dir)
    image = str(bundle_dir / read_bundle(bundle_dir).reference()["images"][0]["file"])
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(bundle_dir), image])
    assert exit_info.value.code == 2
    main(["predict", str(bundle_dir), image, "--artifact", "onnx"])
    assert image in capsys.readouterr().out


def test_engine_build_without_tensorrt_is_a_one_line_dependency_error(jetson_run, monkeypatch, capsys) -> None:
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)
    with pytest.raises(SystemExit) as exit_info:
        main(["engine", "build", str(jetson_run.run_dir / "bundle")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "TensorRT" in error[0]


class _OnnxAsEngine(OnnxRuntimeRunner):
    """Stands in for TensorRTRunner: runs the 'engine' file, which the fake builder made an ONNX copy."""

    scale = 1.0

    def __init__(self, path: Path, name: str | None = None) -> None:
        super().__init__(path, name=name)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return super().infer(batch) * self.scale


def _fake_toolchain(monkeypatch, sign: float) -> list[Path]:
    """Replace the TensorRT builder and runner; the 'engine' is the bundle's ONNX, optionally sign-flipped."""
    import edgetl.backends.tensorrt.build
    import edgetl.backends.tensorrt.runner

    built: list[Path] = []

    def fake_build(onnx_path: Path, engine_path: Path, options, log=print):
        shutil.copyfile(onnx_path, engine_path)
        Path(str(engine_path) + ".json").write_text(json.dumps({"options": options.to_dict()}))
        built.append(engine_path)

    runner = type("Runner", (_OnnxAsEngine,), {"scale": sign})
    monkeypatch.setattr(edgetl.backends.tensorrt.build, "build_engine", fake_build)
    monkeypatch.setattr(edgetl.backends.tensorrt.runner, "TensorRTRunner", runner)
    return built


def test_engine_is_kept_only_when_it_agrees_with_the_reference(jetson_run, tmp_path, monkeypatch) -> None:
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(jetson_run.run_dir / "bundle", bundle_dir)
    built = _fake_toolchain(monkeypatch, sign=1.0)
    result = build_engine_in_bundle(bundle_dir, log=lambda message: None)
    assert result["passed"] and result["agreement"] == 100.0
    assert built[0].name == layout.BUNDLE_ENGINE + ".new" and (bundle_dir / layout.BUNDLE_ENGINE).is_file()
    good = sha256_file(bundle_dir / layout.BUNDLE_ENGINE)

    _fake_toolchain(monkeypatch, sign=-1.0)  # a broken engine: every prediction flips
    with pytest.raises(VerificationError, match="not kept"):
        build_engine_in_bundle(bundle_dir, log=lambda message: None, force=True)
    assert sha256_file(bundle_dir / layout.BUNDLE_ENGINE) == good  # the earlier good engine survives
    assert not (bundle_dir / (layout.BUNDLE_ENGINE + ".new")).exists()


def test_cpu_bundles_have_no_engine_to_build(built_run) -> None:
    with pytest.raises(UserInputError, match="no TensorRT engine to build"):
        build_engine_in_bundle(built_run.run_dir / "bundle")


def test_reference_comparison_counts_disagreements() -> None:
    reference = {"images": [{"label": 0, "logits": [2.0, 1.0]}, {"label": 1, "logits": [0.0, 1.0]}]}
    same = compare_with_reference(np.array([[2.1, 1.0], [0.0, 0.9]], dtype=np.float32), reference, 99.0)
    assert same["passed"] and same["correct"] == 2 and abs(same["max_abs_logit_diff"] - 0.1) < 1e-6
    flipped = compare_with_reference(np.array([[2.0, 1.0], [1.0, 0.0]], dtype=np.float32), reference, 99.0)
    assert not flipped["passed"] and flipped["agreement"] == 50.0


def test_bench_on_a_bundle_measures_it_against_the_reference(built_run, tmp_path, capsys) -> None:
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(built_run.run_dir / "bundle", bundle_dir)
    main(["bench", str(bundle_dir), "-q"])
    results = json.loads((bundle_dir / "bench/bench.json").read_text())
    entry = results["artifacts"]["onnx_int8"]
    assert entry["reference_check"]["passed"] and entry["total"] == 10
    assert entry["latency_ms"]["count"] == 100 and "| onnx_int8 | onnxruntime" in capsys.readouterr().out

    reference = bundle_dir / "reference/reference.json"  # a model that no longer matches what was shipped
    data = json.loads(reference.read_text())
    for item in data["images"]:
        item["logits"] = [-v for v in item["logits"]]
    reference.write_text(json.dumps(data))
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(bundle_dir), "-q"])
    assert exit_info.value.code == 2  # an edited bundle file: refused before anything runs
    info = json.loads((bundle_dir / "bundle.json").read_text())
    info["files"]["reference/reference.json"] = sha256_file(reference)  # consistent bundle, disagreeing model
    (bundle_dir / "bundle.json").write_text(json.dumps(info))
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(bundle_dir), "-q"])
    assert exit_info.value.code == 4
