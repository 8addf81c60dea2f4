"""Every trtexec command edgetl writes uses only options that target's TensorRT release accepts.

ACCEPTED is read from NVIDIA's own trtexec option parser, samples/common/sampleOptions.cpp in
github.com/NVIDIA/TensorRT at tags 8.2.1, 8.5.2, v8.6.1, v10.3.0, v10.9.0, v10.13.0 and v11.0
(trtexec exits with "Unknown option" on anything else, samples/trtexec/trtexec.cpp). It is written
independently of `edgetl.backends.tensorrt.versions`, so a wrong rule there fails here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgetl import layout
from edgetl.backends.tensorrt.build import trtexec_command
from edgetl.backends.tensorrt.options import EngineOptions
from edgetl.backends.tensorrt.versions import TensorRTRelease
from edgetl.errors import ModelFileError, UserInputError
from edgetl.onnx.export import export_onnx
from edgetl.onnx.opset_lowering import lower_opset
from edgetl.targets import get_target, target_names
from tests.helpers import tiny_profile, write_profile

_COMMON = {"--onnx", "--saveEngine", "--minShapes", "--optShapes", "--maxShapes", "--timingCacheFile", "--useDLACore"}
_COMMON |= {"--allowGPUFallback"}
_BUILD_8_6 = {"--hardwareCompatibilityLevel", "--versionCompatible", "--builderOptimizationLevel"}
ACCEPTED: dict[str, set[str]] = {
    "8.2": _COMMON | {"--fp16", "--int8", "--workspace", "--buildOnly"},
    "8.5": _COMMON | {"--fp16", "--int8", "--workspace", "--memPoolSize", "--buildOnly"},
    "8.6": _COMMON
    | _BUILD_8_6
    | {"--fp16", "--int8", "--workspace", "--memPoolSize", "--buildOnly", "--skipInference"},
    "10.3": _COMMON | _BUILD_8_6 | {"--fp16", "--int8", "--stronglyTyped", "--memPoolSize", "--skipInference"},
    "10.9": _COMMON | _BUILD_8_6 | {"--fp16", "--int8", "--stronglyTyped", "--memPoolSize", "--skipInference"},
    "10.13": _COMMON | _BUILD_8_6 | {"--fp16", "--int8", "--stronglyTyped", "--memPoolSize", "--skipInference"},
    "11.0": _COMMON | _BUILD_8_6 | {"--stronglyTyped", "--memPoolSize", "--skipInference"},
}
HARDWARE_LEVELS = {"8.6": {"ampere+"}, "10.3": {"ampere+"}, "10.9": {"ampere+", "sameComputeCapability"}}
HARDWARE_LEVELS |= {"10.13": HARDWARE_LEVELS["10.9"], "11.0": HARDWARE_LEVELS["10.9"]}


def _assert_accepted(command: list[str], release: str) -> None:
    assert command[0] == "trtexec"
    for argument in command[1:]:
        name, _, value = argument.partition("=")
        assert name in ACCEPTED[release], f"TensorRT {release}'s trtexec does not accept {name}: {command}"
        if name == "--hardwareCompatibilityLevel":
            assert value in HARDWARE_LEVELS[release], argument
        if name == "--memPoolSize":
            assert value.split(":")[1].isdigit(), "a bare MiB count: 8.4-10.0 do not parse unit suffixes"
    assert command.count("--buildOnly") + command.count("--skipInference") == 1  # never runs inference


def _options_for(release: TensorRTRelease, precision: str) -> list[EngineOptions]:
    """Plain options, and every build setting the release has, with and without strong typing."""
    variants = [EngineOptions(precision=precision, max_batch=8, timing_cache="timing.cache")]
    if release.has_builder_optimization_level:
        for level in release.hardware_compatibility_levels()[1:]:
            variants.append(
                EngineOptions(
                    precision=precision,
                    hardware_compatibility=level,
                    version_compatible=True,
                    builder_optimization_level=5,
                )
            )
    if release.has_strong_typing:
        variants.append(EngineOptions(precision=precision, strongly_typed=True))
    if release.has_precision_flags:
        variants.append(EngineOptions(precision=precision, strongly_typed=False, dla_core=0))
    return variants


@pytest.mark.parametrize("release", sorted(ACCEPTED, key=lambda r: TensorRTRelease.parse(r)))
def test_every_rendered_command_uses_only_options_that_release_accepts(release: str) -> None:
    parsed = TensorRTRelease.parse(release)
    for precision in ("fp16", "int8"):
        for options in _options_for(parsed, precision):
            for shape in ([-1, 3, 224, 224], [1, 3, 224, 224]):
                if shape[0] == 1:
                    options = EngineOptions(**{**options.to_dict(), "min_batch": 1, "opt_batch": 1, "max_batch": 1})
                _assert_accepted(trtexec_command("m.onnx", "m.engine", options, "input", shape, parsed), release)


def test_every_tensorrt_target_renders_for_its_own_release() -> None:
    targets = [get_target(name) for name in target_names() if get_target(name).engine is not None]
    assert {str(t.engine.release) for t in targets if t.engine} == {"8.2", "8.5", "10.3"}
    known = {"8.2": "8.2", "8.5": "8.5", "10.3": "10.3"}
    for target in targets:
        assert target.engine is not None
        release = target.engine.release
        precision = target.engine_precision(target.supports_int8) or "fp16"
        options = EngineOptions(precision=precision, workspace_mb=target.engine.workspace_mb, max_batch=4)
        _assert_accepted(
            trtexec_command("model.onnx", "model.engine", options, "input", [-1, 3, 224, 224], release),
            known[str(release)],
        )


def test_jetson_nano_command_is_tensorrt_8_2s() -> None:
    release = get_target("jetson-nano").engine.release  # type: ignore[union-attr]
    options = EngineOptions(precision="fp16", max_batch=4, workspace_mb=256, timing_cache="timing.cache")
    assert trtexec_command("model.onnx", "model.engine", options, "input", [-1, 3, 224, 224], release) == [
        "trtexec",
        "--onnx=model.onnx",
        "--saveEngine=model.engine",
        "--fp16",
        "--minShapes=input:1x3x224x224",
        "--optShapes=input:1x3x224x224",
        "--maxShapes=input:4x3x224x224",
        "--workspace=256",
        "--timingCacheFile=timing.cache",
        "--buildOnly",
    ]


def test_releases_are_parsed_and_unsupported_ones_named() -> None:
    assert TensorRTRelease.parse("10.3.0.26") == TensorRTRelease(10, 3) and str(TensorRTRelease.parse("8.2")) == "8.2"
    for text, message in (("9.2.0", "TensorRT 9.2 is not supported"), ("7.1", "7.1 is not supported"), ("x", "not a")):
        with pytest.raises(UserInputError, match=message):
            TensorRTRelease.parse(text)
    with pytest.raises(UserInputError, match="version_compatible needs TensorRT >= 8.6; target jetson-nano builds"):
        EngineOptions(version_compatible=True).check_release(TensorRTRelease(8, 2), "target jetson-nano")


@pytest.mark.parametrize(
    ("target", "section", "message"),
    [
        (
            "jetson-nano",
            {"hardware_compatibility": "ampere_plus"},
            "ampere_plus needs TensorRT >= 8.6; target jetson-nano",
        ),
        ("jetson-nano", {"builder_optimization_level": 4}, "builder_optimization_level needs TensorRT >= 8.6"),
        ("jetson-nano", {"strongly_typed": True}, "strongly_typed needs TensorRT >= 10.0; target jetson-nano builds"),
        ("jetson-orin-nano", {"hardware_compatibility": "same_compute_capability"}, "needs TensorRT >= 10.9"),
        ("nvidia-gpu", {"strongly_typed": True}, "strongly typed fp16 engines .* set optimize.fp16.enabled: true"),
    ],
)
def test_a_setting_the_targets_release_cannot_build_is_a_profile_error(
    tmp_path: Path, target: str, section: dict, message: str
) -> None:
    from edgetl.profile import load_profile

    overrides: dict = {"target": target, "tensorrt": section}
    overrides["optimize"] = {"int8": {"enabled": False}}  # the float engine: fp16
    path = write_profile(tmp_path / "p.yaml", tiny_profile(tmp_path, tmp_path / "run", **overrides))
    with pytest.raises(Exception, match=message) as caught:
        load_profile(path)
    assert len(str(caught.value).strip().splitlines()) == 1


class _Blocks(torch.nn.Module):
    """What MobileNetV3 / EfficientNet-Lite graphs contain: conv, HardSwish, squeeze-excite (ReduceMean), a reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.gate = torch.nn.Conv2d(8, 8, 1)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.hardswish(self.conv(x))
        y = y * torch.sigmoid(self.gate(y.mean((2, 3), keepdim=True)))
        y = torch.nn.functional.relu6(y) + 1.0
        return self.head(y.mean((2, 3)).reshape(x.shape[0], -1))


@pytest.mark.parametrize("opset", [13, 17])
def test_lowering_keeps_the_model_exact_and_valid(opset: int) -> None:
    import onnxruntime as ort

    model = _Blocks().eval()
    proto = export_onnx(model, (3, 16, 16), "dynamic", 18)
    lowered = lower_opset(proto, opset, "blocks.onnx")
    onnx.checker.check_model(lowered, full_check=True)
    assert next(o.version for o in lowered.opset_import if o.domain == "") == opset
    assert lowered.ir_version <= (7 if opset == 13 else 8)
    if opset == 13:
        assert "HardSwish" not in {n.op_type for n in lowered.graph.node}  # HardSwish is opset 14
    images = np.random.default_rng(0).normal(size=(3, 3, 16, 16)).astype(np.float32)
    expected = model(torch.from_numpy(images)).detach().numpy()
    actual = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": images}
    )[0]
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_an_op_that_cannot_be_lowered_is_named() -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="dynamic_reshape", allowzero=1)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ModelFileError, match="m.onnx: cannot lower Reshape \\(dynamic_reshape\\): allowzero=1"):
        lower_opset(model, 13, "m.onnx")


def test_jetson_nano_build_exports_opset_13_and_a_tensorrt_8_2_script(built_run, tmp_path: Path) -> None:
    from edgetl.console import Log
    from edgetl.pipeline import build

    shutil.copytree(built_run.run_dir, tmp_path / "run")
    root = Path(json.loads((built_run.run_dir / layout.MANIFEST).read_text())["profile"]["resolved"]["data"]["root"])
    profile = tiny_profile(root, tmp_path / "run", target="jetson-nano", optimize={"int8": {"enabled": False}})
    outcome = build(write_profile(tmp_path / "nano.yaml", profile), log=Log(quiet=True))
    assert outcome.results["finetune"].skipped
    exported = onnx.load(str(outcome.run_dir / layout.ONNX_FP32))
    onnx.checker.check_model(exported, full_check=True)
    assert next(o.version for o in exported.opset_import if o.domain == "") == 13 and exported.ir_version == 7
    parity = outcome.results["export"].summary.parity
    assert parity["passed"] and parity["top1_agreement"] == 1.0 and outcome.results["export"].summary.opset == 13
    bundle = json.loads((outcome.run_dir / layout.BUNDLE_DIR / layout.BUNDLE_INFO).read_text())
    assert bundle["engine"]["tensorrt"] == "8.2" and bundle["engine"]["strongly_typed"] is False
    script = (outcome.run_dir / layout.BUNDLE_DIR / layout.BUNDLE_BUILD_SCRIPT).read_text()
    assert "--workspace=256" in script and "--buildOnly" in script
    assert "--memPoolSize" not in script and "--skipInference" not in script
    assert "TensorRT 8.2" in (outcome.run_dir / layout.BUNDLE_DIR / layout.BUNDLE_README).read_text()
