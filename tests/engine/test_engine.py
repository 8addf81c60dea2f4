"""TensorRT engines: options, trtexec command, sidecar compatibility, builder and runner.

Without a GPU, the builder and runner run against small in-process stand-ins for the `tensorrt`
and `pycuda.driver` modules that implement the TensorRT 10 / pycuda calls edgetl makes (same names
and signatures; the engine "computes" logits[n, j] = mean(x[n]) * (j + 1)). That exercises the
real control flow: flags, profiles, timing cache, atomic files, sidecar checks, buffers, batch
splitting. The `gpu` tests at the end build real engines and compare them with ONNX Runtime.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgetl.backends.tensorrt.build as build_module
from edgetl.backends.tensorrt import (
    EngineOptions,
    EngineSidecar,
    build_engine,
    check_compatible,
    read_sidecar,
    sidecar_path,
    tensorrt_environment,
    trtexec_command,
    write_sidecar,
)
from edgetl.backends.tensorrt.runner import TensorRTRunner
from edgetl.backends.tensorrt.versions import TensorRTRelease
from edgetl.errors import (
    DependencyError,
    EngineMismatchError,
    ModelFileError,
    UserInputError,
    VerificationError,
)

REPO = Path(__file__).resolve().parents[2]
CHW = (3, 4, 4)
CLASSES = 5


# ------------------------------------------------------------------------------------------ options


def test_options_defaults_round_trip_and_paths() -> None:
    options = EngineOptions(precision="int8", min_batch=1, opt_batch=4, max_batch=16, timing_cache="cache/timing.cache")
    assert options.timing_cache == Path("cache/timing.cache")
    data = options.to_dict()
    assert data["timing_cache"] == "cache/timing.cache"
    assert json.loads(json.dumps(data)) == data
    assert EngineOptions.from_dict(data) == options
    assert EngineOptions.from_dict({}) == EngineOptions()
    assert options.profile == (1, 4, 16) and options.fixed_batch is None
    assert EngineOptions(min_batch=4, opt_batch=4, max_batch=4).fixed_batch == 4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"precision": "bf16"}, "tensorrt.precision: 'bf16' is not one of fp32, fp16, int8"),
        ({"min_batch": 0}, "tensorrt.min_batch: expected a positive integer, got 0"),
        ({"max_batch": 2.0}, "tensorrt.max_batch: expected a positive integer, got 2.0"),
        ({"opt_batch": True}, "tensorrt.opt_batch: expected a positive integer, got True"),
        ({"min_batch": 4, "opt_batch": 2, "max_batch": 8}, "need min_batch <= opt_batch <= max_batch, got 4, 2, 8"),
        ({"opt_batch": 16, "max_batch": 8}, "need min_batch <= opt_batch <= max_batch, got 1, 16, 8"),
        ({"workspace_mb": -1}, "tensorrt.workspace_mb: expected a positive integer, got -1"),
        ({"dla_core": -1}, "tensorrt.dla_core: expected a DLA core index"),
        ({"dla_core": 0, "precision": "fp32"}, "the DLA runs fp16 and int8 only; set precision fp16 or int8"),
        ({"gpu_fallback": "yes"}, "tensorrt.gpu_fallback: expected true or false"),
        ({"hardware_compatibility": "ampere+"}, "tensorrt.hardware_compatibility: 'ampere+' is not one of none"),
        ({"builder_optimization_level": 6}, "tensorrt.builder_optimization_level: expected 0..5, got 6"),
        ({"timing_cache": ""}, "tensorrt.timing_cache: expected a file path"),
    ],
)
def test_options_validation(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UserInputError, match=None) as caught:
        EngineOptions(**changes)
    assert message in str(caught.value)


def test_options_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(UserInputError, match="unknown option.*max_batchh"):
        EngineOptions.from_dict({"max_batchh": 4})


# ------------------------------------------------------------------------------------------ trtexec

JETPACK_6 = TensorRTRelease(10, 3)


def test_trtexec_fp16_dynamic_batch() -> None:
    options = EngineOptions(precision="fp16", min_batch=1, opt_batch=4, max_batch=32, workspace_mb=4096)
    assert trtexec_command("model.onnx", "model.engine", options, "input", [-1, 3, 224, 224], JETPACK_6) == [
        "trtexec",
        "--onnx=model.onnx",
        "--saveEngine=model.engine",
        "--fp16",
        "--minShapes=input:1x3x224x224",
        "--optShapes=input:4x3x224x224",
        "--maxShapes=input:32x3x224x224",
        "--memPoolSize=workspace:4096",
        "--skipInference",
    ]


def test_trtexec_int8_with_timing_cache_and_symbolic_batch() -> None:
    options = EngineOptions(precision="int8", max_batch=8, workspace_mb=1024, timing_cache="timing.cache")
    command = trtexec_command(
        Path("b/model.onnx"), Path("b/model.engine"), options, "input", ["batch", 3, 96, 96], JETPACK_6
    )
    assert command == [
        "trtexec",
        "--onnx=b/model.onnx",
        "--saveEngine=b/model.engine",
        "--fp16",
        "--int8",
        "--minShapes=input:1x3x96x96",
        "--optShapes=input:1x3x96x96",
        "--maxShapes=input:8x3x96x96",
        "--memPoolSize=workspace:1024",
        "--timingCacheFile=timing.cache",
        "--skipInference",
    ]


def test_trtexec_dla_with_and_without_gpu_fallback() -> None:
    options = EngineOptions(precision="int8", min_batch=4, opt_batch=4, max_batch=4, workspace_mb=512, dla_core=1)
    command = trtexec_command("m.onnx", "m.engine", options, "input", [4, 3, 8, 8], JETPACK_6)
    assert command == [
        "trtexec",
        "--onnx=m.onnx",
        "--saveEngine=m.engine",
        "--fp16",
        "--int8",
        "--memPoolSize=workspace:512",
        "--useDLACore=1",
        "--allowGPUFallback",
        "--skipInference",
    ]
    strict = EngineOptions(precision="fp16", max_batch=1, dla_core=0, gpu_fallback=False)
    assert trtexec_command("m.onnx", "m.engine", strict, "input", [1, 3, 8, 8], JETPACK_6)[4:] == [
        "--memPoolSize=workspace:1024",
        "--useDLACore=0",
        "--skipInference",
    ]


def test_trtexec_compatibility_and_optimization_level() -> None:
    options = EngineOptions(
        precision="fp32",
        max_batch=2,
        hardware_compatibility="ampere_plus",
        version_compatible=True,
        builder_optimization_level=5,
    )
    assert trtexec_command("m.onnx", "m.engine", options, "images:0", [None, 3, 8, 8], JETPACK_6)[3:] == [
        "--minShapes='images:0':1x3x8x8",
        "--optShapes='images:0':1x3x8x8",
        "--maxShapes='images:0':2x3x8x8",
        "--memPoolSize=workspace:1024",
        "--hardwareCompatibilityLevel=ampere+",
        "--versionCompatible",
        "--builderOptimizationLevel=5",
        "--skipInference",
    ]
    same = EngineOptions(hardware_compatibility="same_compute_capability")
    assert "--hardwareCompatibilityLevel=sameComputeCapability" in trtexec_command(
        "m", "e", same, "x", [-1, 3, 8, 8], TensorRTRelease(10, 9)
    )


def test_trtexec_refuses_a_profile_a_fixed_batch_model_cannot_take() -> None:
    with pytest.raises(
        UserInputError, match="m.onnx: the model has a fixed batch size of 1.*1/1/8: set all three to 1"
    ):
        trtexec_command("m.onnx", "m.engine", EngineOptions(max_batch=8), "input", [1, 3, 8, 8], JETPACK_6)
    with pytest.raises(UserInputError, match="fixed C, H, W"):
        trtexec_command("m.onnx", "m.engine", EngineOptions(), "input", [-1, 3, -1, -1], JETPACK_6)


# ------------------------------------------------------------------------------------------ sidecar


def _sidecar(**changes: Any) -> EngineSidecar:
    options = EngineOptions(**changes.pop("options", {})).to_dict()
    base = {
        "tensorrt_version": "10.3.0",
        "gpu_name": "Orin",
        "compute_capability": "8.7",
        "options": options,
        "onnx_sha256": "ab" * 32,
        "input_name": "input",
        "input_shape": [-1, 3, 224, 224],
        "output_name": "logits",
        "created": "2025-01-02T03:04:05Z",
    }
    return EngineSidecar(**{**base, **changes})


def test_sidecar_round_trip_next_to_the_engine(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    sidecar = _sidecar(options={"precision": "int8", "max_batch": 4}, engine_sha256="cd" * 32)
    path = write_sidecar(engine, sidecar)
    assert path == sidecar_path(engine) == tmp_path / "model.engine.json"
    data = json.loads(path.read_text())
    assert data["schema"] == "edgetl.engine/1" and list(data)[0] == "schema"
    assert data["compute_capability"] == "8.7" and data["input_shape"] == [-1, 3, 224, 224]
    loaded = read_sidecar(engine)
    assert loaded == sidecar
    assert loaded.engine_options == EngineOptions(precision="int8", max_batch=4)
    assert loaded.chw == (3, 224, 224)
    assert engine.read_bytes() == b"plan"  # the engine stays a plain plan


def test_sidecar_missing_or_invalid(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    with pytest.raises(ModelFileError, match=r"model.engine: its sidecar model.engine.json is missing.*edgetl engine"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ModelFileError, match="unreadable engine sidecar"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"schema": "edgetl.engine/0"}))
    with pytest.raises(ModelFileError, match="schema 'edgetl.engine/0', expected 'edgetl.engine/1'"):
        read_sidecar(engine)
    broken = _sidecar().to_dict()
    del broken["output_name"]
    sidecar_path(engine).write_text(json.dumps(broken))
    with pytest.raises(ModelFileError, match="missing output_name"):
        read_sidecar(engine)


def test_rebuild_hint_names_the_bundle_directory(tmp_path: Path) -> None:
    (tmp_path / "bundle.json").write_text("{}")
    with pytest.raises(EngineMismatchError) as caught:
        check_compatible(_sidecar(), "10.4.0", "8.7", "Orin", engine_path=tmp_path / "model.engine")
    assert f"`edgetl engine build {tmp_path}`" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "here"),
    [
        ({}, ("10.3.0", "8.7", "Orin")),
        ({}, ("10.3.0.26", "8.7", "orin")),  # build number and case are not compared
        ({"version_compatible": True}, ("10.7.0", "8.7", "Orin")),
        ({"hardware_compatibility": "ampere_plus"}, ("10.3.0", "8.6", "NVIDIA GeForce RTX 3090")),
        ({"hardware_compatibility": "ampere_plus"}, ("10.3.0", "9.0", "NVIDIA H100 80GB HBM3")),
        ({"hardware_compatibility": "same_compute_capability"}, ("10.3.0", "8.7", "Jetson AGX Orin")),
    ],
)
def test_compatible_engines_pass(options: dict[str, Any], here: tuple[str, str, str]) -> None:
    check_compatible(_sidecar(options=options), *here, engine_path="e.engine")


@pytest.mark.parametrize(
    ("options", "here", "reason"),
    [
        ({}, ("10.4.0", "8.7", "Orin"), "an engine loads only on the TensorRT release it was built with"),
        ({}, ("10.3.1", "8.7", "Orin"), "an engine loads only on the TensorRT release it was built with"),
        ({}, ("10.3.0", "8.9", "NVIDIA L4"), "an engine runs only on the GPU model it was built for"),
        ({}, ("10.3.0", "8.7", "Jetson AGX Orin"), "an engine runs only on the GPU model it was built for"),
        ({"version_compatible": True}, ("10.2.0", "8.7", "Orin"), "loads on TensorRT 10.x from 10.3.0 on"),
        ({"version_compatible": True}, ("11.0.0", "8.7", "Orin"), "loads on TensorRT 10.x from 10.3.0 on"),
        ({"hardware_compatibility": "ampere_plus"}, ("10.3.0", "7.5", "Tesla T4"), "needs compute capability 8.0"),
        (
            {"hardware_compatibility": "same_compute_capability"},
            ("10.3.0", "8.6", "A10"),
            "needs compute capability 8.7",
        ),
    ],
)
def test_incompatible_engines_name_the_file_and_the_fix(
    options: dict[str, Any], here: tuple[str, str, str], reason: str
) -> None:
    with pytest.raises(EngineMismatchError) as caught:
        check_compatible(_sidecar(options=options), *here, engine_path="runs/x/bundle/model.engine")
    message = str(caught.value)
    assert isinstance(caught.value, ModelFileError) and caught.value.exit_code == 2
    assert message.startswith(
        "engine runs/x/bundle/model.engine was built with TensorRT 10.3.0 for compute capability 8.7 (Orin)"
    )
    assert f"this machine has TensorRT {here[0]} and compute capability {here[1]} ({here[2]})" in message
    assert reason in message
    assert message.endswith("rebuild it on this machine with `edgetl engine build BUNDLE`")
    assert "\n" not in message


def test_mismatch_lists_every_reason_and_the_engine_kind() -> None:
    sidecar = _sidecar(options={"version_compatible": True, "hardware_compatibility": "ampere_plus"})
    with pytest.raises(EngineMismatchError) as caught:
        check_compatible(sidecar, "9.0.0", "7.2", "Xavier", engine_path="m.engine")
    message = str(caught.value)
    assert "(Orin) (version-compatible, hardware compatibility ampere_plus)" in message
    assert "from 10.3.0 on; an ampere_plus engine needs compute capability 8.0" in message


# ------------------------------------------------------------------------------------------ no TensorRT


def test_without_tensorrt_everything_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    hint = r"TensorRT is not installed: pip install 'edgetl\[tensorrt\]' on a machine with an NVIDIA driver"
    with pytest.raises(DependencyError, match=hint):
        build_engine(model, tmp_path / "model.engine", EngineOptions())
    with pytest.raises(DependencyError, match=hint):
        tensorrt_environment()
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    write_sidecar(engine, _sidecar())
    runner = TensorRTRunner(engine)
    assert runner.fixed_batch is None and runner.max_batch == 8  # known from the sidecar without TensorRT
    with pytest.raises(DependencyError, match=hint):
        runner.activate()
    assert not runner.is_active


def test_without_pycuda_the_runner_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _install_fake_tensorrt(monkeypatch)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    write_sidecar(engine, _sidecar())
    with pytest.raises(DependencyError, match=r"pycuda is not installed: pip install 'edgetl\[tensorrt\]'"):
        TensorRTRunner(engine).activate()


def test_missing_inputs_are_model_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="nothing.onnx: ONNX model not found"):
        build_engine(tmp_path / "nothing.onnx", tmp_path / "m.engine", EngineOptions())
    with pytest.raises(ModelFileError, match="nothing.engine: TensorRT engine not found"):
        TensorRTRunner(tmp_path / "nothing.engine").activate()


def test_importing_engine_code_imports_neither_torch_nor_tensorrt() -> None:
    code = (
        "import sys, edgetl.backends.tensorrt, edgetl.backends.tensorrt.build, edgetl.backends.tensorrt.runner\n"
        "heavy = [m for m in ('torch', 'tensorrt', 'pycuda', 'onnx') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ------------------------------------------------------------------------------------------ fakes


class _Memory:
    """Fake device memory shared by the fake pycuda (copies) and the fake engine (execute)."""

    blocks: dict[int, np.ndarray] = {}
    ids = itertools.count(0x1000, 0x1000)


def _fake_pycuda(gpu: str = "NVIDIA Fake GPU", capability: tuple[int, int] = (8, 6)) -> types.ModuleType:
    cuda = types.ModuleType("pycuda.driver")
    cuda.stack = []  # type: ignore[attr-defined]
    cuda.clock = itertools.count(0.0, 0.25)  # type: ignore[attr-defined]

    class Context:
        def push(self) -> None:
            cuda.stack.append(self)

        @staticmethod
        def pop() -> None:
            cuda.stack.pop()

        def detach(self) -> None:
            self.detached = True

    class Device:
        @staticmethod
        def count() -> int:
            return 1

        def __init__(self, index: int) -> None:
            self.index = index

        def name(self) -> str:
            return gpu

        def compute_capability(self) -> tuple[int, int]:
            return capability

        def retain_primary_context(self) -> Context:
            return Context()

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self.ptr = next(_Memory.ids)
            _Memory.blocks[self.ptr] = np.zeros(nbytes, np.uint8)

        def __int__(self) -> int:
            return self.ptr

        def free(self) -> None:
            del _Memory.blocks[self.ptr]

    class Stream:
        handle = 0xBEEF

        def synchronize(self) -> None:
            pass

    class Event:
        def record(self, stream: Any = None) -> Event:
            assert stream is not None and stream.handle == 0xBEEF
            self.time = next(cuda.clock)
            return self

        def synchronize(self) -> Event:
            return self

        def time_since(self, start: Event) -> float:
            return self.time - start.time

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Any = None) -> None:
        raw = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        _Memory.blocks[int(dest)][: raw.size] = raw

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Any = None) -> None:
        dest.view(np.uint8).reshape(-1)[:] = _Memory.blocks[int(src)][: dest.nbytes]

    cuda.init = lambda: None  # type: ignore[attr-defined]
    cuda.Context, cuda.Device, cuda.Stream, cuda.Event = Context, Device, Stream, Event  # type: ignore[attr-defined]
    cuda.mem_alloc = DeviceAllocation  # type: ignore[attr-defined]
    cuda.pagelocked_empty = lambda shape, dtype: np.zeros(shape, dtype)  # type: ignore[attr-defined]
    cuda.memcpy_htod_async = memcpy_htod_async  # type: ignore[attr-defined]
    cuda.memcpy_dtoh_async = memcpy_dtoh_async  # type: ignore[attr-defined]
    return cuda


def _fake_tensorrt(version: str = "10.3.0", **spec: Any) -> types.ModuleType:
    """The TensorRT 10 Python API surface edgetl uses; `spec` describes the parsed ONNX model."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    trt.spec = {  # type: ignore[attr-defined]
        "input": ("input", [-1, *CHW]),
        "classes": CLASSES,
        "qdq": False,
        "parse_errors": [],
        "build_error": None,
        "dla_cores": 0,
        "fp16": False,  # the parsed model computes in fp16 (an fp16 ONNX)
        **spec,
    }
    trt.calls = {"deserialize": 0, "networks": []}  # type: ignore[attr-defined]
    names = types.SimpleNamespace
    trt.MemoryPoolType = names(WORKSPACE="WORKSPACE")  # type: ignore[attr-defined]
    trt.BuilderFlag = names(  # type: ignore[attr-defined]
        FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK", VERSION_COMPATIBLE="VERSION_COMPATIBLE"
    )
    trt.DeviceType = names(GPU="GPU", DLA="DLA")  # type: ignore[attr-defined]
    trt.HardwareCompatibilityLevel = names(  # type: ignore[attr-defined]
        NONE="NONE", AMPERE_PLUS="AMPERE_PLUS", SAME_COMPUTE_CAPABILITY="SAME_COMPUTE_CAPABILITY"
    )
    trt.LayerType = names(QUANTIZE="QUANTIZE", DEQUANTIZE="DEQUANTIZE", CONVOLUTION="CONVOLUTION")  # type: ignore
    trt.TensorIOMode = names(INPUT="INPUT", OUTPUT="OUTPUT")  # type: ignore[attr-defined]
    # Enum values as in NvInfer.h 10.x (kEXPLICIT_BATCH = 0, kSTRONGLY_TYPED = 1).
    trt.NetworkDefinitionCreationFlag = names(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)  # type: ignore[attr-defined]
    trt.DataType = names(FLOAT="FLOAT", HALF="HALF", INT8="INT8")  # type: ignore[attr-defined]
    trt.nptype = lambda dtype: {"float32": np.float32}[dtype]  # type: ignore[attr-defined]

    class ILogger:
        class Severity(enum.IntEnum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3
            VERBOSE = 4

        def __init__(self) -> None:
            pass

    class Tensor:
        def __init__(self, name: str, shape: list[int]) -> None:
            self.name, self.shape = name, shape

    class Layer:
        def __init__(self, kind: str, dtype: str) -> None:
            self.type, self.num_outputs, self._output = kind, 1, names(dtype=dtype)

        def get_output(self, index: int) -> Any:
            return self._output

    class Network:
        def __init__(self) -> None:
            self.num_inputs = self.num_outputs = self.num_layers = 0

        def populate(self) -> None:
            name, shape = trt.spec["input"]
            self.inputs = [Tensor(name, list(shape))]
            self.outputs = [Tensor("logits", [shape[0], trt.spec["classes"]])]
            kinds = ["QUANTIZE", "DEQUANTIZE", "CONVOLUTION"] if trt.spec["qdq"] else ["CONVOLUTION"]
            dtype = "HALF" if trt.spec["fp16"] else "FLOAT"
            self.layers = [Layer(kind, dtype) for kind in kinds]
            self.num_inputs, self.num_outputs, self.num_layers = 1, 1, len(self.layers)

        def get_input(self, index: int) -> Tensor:
            return self.inputs[index]

        def get_output(self, index: int) -> Tensor:
            return self.outputs[index]

        def get_layer(self, index: int) -> Any:
            return self.layers[index]

    class ParserError:
        def __init__(self, node: int, operator: str, desc: str) -> None:
            self._node, self._operator, self._desc = node, operator, desc

        def node(self) -> int:
            return self._node

        def node_name(self) -> str:
            return f"/{self._operator.lower()}_{self._node}"

        def node_operator(self) -> str:
            return self._operator

        def desc(self) -> str:
            return self._desc

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network = network
            self.errors = [ParserError(*error) for error in trt.spec["parse_errors"]]

        def parse_from_file(self, path: str) -> bool:
            assert Path(path).is_file()
            if self.errors:
                return False
            self.network.populate()
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> ParserError:
            return self.errors[index]

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            text = bytes(data).decode() if data else ""
            self.gpu, _, entries = text.partition(":")
            self.entries = int(entries or 0)

        def serialize(self) -> bytes:
            return f"{self.gpu}:{self.entries}".encode()

        def combine(self, other: TimingCache, ignore_mismatch: bool) -> bool:
            if other.gpu != self.gpu and not ignore_mismatch:
                return False
            self.entries = max(self.entries, other.entries)
            return True

    class Config:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.pools: dict[str, int] = {}
            self.profiles: list[Any] = []
            self.timing_cache: TimingCache | None = None
            self.default_device_type = "GPU"
            self.DLA_core = -1
            self.hardware_compatibility_level = "NONE"
            self.builder_optimization_level = 3
            trt.config = self

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            self.pools[pool] = size

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def add_optimization_profile(self, profile: Any) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            if cache.gpu not in ("", trt.gpu) and not ignore_mismatch:
                return False
            cache.gpu = trt.gpu
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.timing_cache

    class Profile:
        def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
            self.name, self.shapes = name, [list(low), list(opt), list(high)]

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.num_DLA_cores = trt.spec["dla_cores"]

        def create_network(self, flags: int = 0) -> Network:
            trt.calls["networks"].append(flags)
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            if trt.spec["build_error"]:
                self.logger.log(ILogger.Severity.ERROR, trt.spec["build_error"])
                return None
            if config.timing_cache is not None:
                config.timing_cache.entries += 1
            name, shape = trt.spec["input"]
            profile = config.profiles[0].shapes if config.profiles else [list(shape)] * 3
            plan = {"input": name, "shape": shape, "profile": profile, "classes": trt.spec["classes"]}
            return json.dumps(plan).encode()

    class Engine:
        def __init__(self, plan: dict[str, Any]) -> None:
            self.plan = plan
            self.num_io_tensors = 2

        def get_tensor_name(self, index: int) -> str:
            return [self.plan["input"], "logits"][index]

        def get_tensor_mode(self, name: str) -> str:
            return "INPUT" if name == self.plan["input"] else "OUTPUT"

        def get_tensor_shape(self, name: str) -> list[int]:
            shape = self.plan["shape"]
            return list(shape) if name == self.plan["input"] else [shape[0], self.plan["classes"]]

        def get_tensor_dtype(self, name: str) -> str:
            return "float32"

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[list[int]]:
            assert name == self.plan["input"] and profile_index == 0
            return self.plan["profile"]

        def create_execution_context(self) -> Context:
            return Context(self)

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine, self.addresses, self.shape = engine, {}, None

        def set_input_shape(self, name: str, shape: Any) -> bool:
            low, _, high = self.engine.plan["profile"]
            if not all(a <= b <= c for a, b, c in zip(low, shape, high, strict=True)):
                return False
            self.shape = list(shape)
            return True

        def get_tensor_shape(self, name: str) -> list[int]:
            return self.shape if name == self.engine.plan["input"] else [self.shape[0], self.engine.plan["classes"]]

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert stream_handle == 0xBEEF
            count = int(np.prod(self.shape))
            x = _Memory.blocks[self.addresses[self.engine.plan["input"]]].view(np.float32)[:count]
            means = x.reshape(self.shape[0], -1).mean(axis=1)
            logits = (means[:, None] * np.arange(1, self.engine.plan["classes"] + 1)).astype(np.float32)
            out = _Memory.blocks[self.addresses["logits"]].view(np.float32)
            out[: logits.size] = logits.reshape(-1)
            return True

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.engine_host_code_allowed = False
            self.DLA_core = -1
            trt.runtime = self

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            trt.calls["deserialize"] += 1
            try:
                return Engine(json.loads(bytes(data)))
            except ValueError:
                self.logger.log(ILogger.Severity.ERROR, "Serialization assertion failed: magic tag mismatch")
                return None

    trt.ILogger, trt.Builder, trt.OnnxParser, trt.Runtime = ILogger, Builder, OnnxParser, Runtime  # type: ignore
    trt.gpu = "NVIDIA Fake GPU"  # type: ignore[attr-defined]
    # Which real TensorRT class each stand-in plays: tests/engine/test_tensorrt_stubs.py checks every name
    # and arity the stand-ins offer against NVIDIA's type stubs, so a name wrong here and in edgetl fails.
    trt.stands_for = {  # type: ignore[attr-defined]
        "ILogger": ILogger,
        "ITensor": Tensor,
        "ILayer": Layer,
        "INetworkDefinition": Network,
        "ParserError": ParserError,
        "OnnxParser": OnnxParser,
        "ITimingCache": TimingCache,
        "IBuilderConfig": Config,
        "IOptimizationProfile": Profile,
        "Builder": Builder,
        "ICudaEngine": Engine,
        "IExecutionContext": Context,
        "Runtime": Runtime,
    }
    return trt


def _install_fake_tensorrt(monkeypatch: pytest.MonkeyPatch, version: str = "10.3.0", **spec: Any) -> Any:
    trt = _fake_tensorrt(version, **spec)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(build_module, "_LOGGER", None)
    return trt


def _install_fakes(
    monkeypatch: pytest.MonkeyPatch,
    version: str = "10.3.0",
    capability: tuple[int, int] = (8, 6),
    **spec: Any,
) -> tuple[Any, Any]:
    trt = _install_fake_tensorrt(monkeypatch, version, **spec)
    cuda = _fake_pycuda(capability=capability)
    package = types.ModuleType("pycuda")
    package.driver = cuda  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    return trt, cuda


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "bundle" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(b"a tiny onnx model")
    return path


def _batch(count: int, offset: float = 0.0) -> np.ndarray:
    values = np.arange(count * int(np.prod(CHW)), dtype=np.float32).reshape(count, *CHW) / 10.0
    return values + offset


def _expected(batch: np.ndarray) -> np.ndarray:
    return batch.reshape(len(batch), -1).mean(axis=1)[:, None] * np.arange(1, CLASSES + 1, dtype=np.float32)


# ------------------------------------------------------------------------------------------ builder


def test_build_fp16_engine_with_dynamic_batch(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    trt, _ = _install_fakes(monkeypatch)
    engine = onnx_file.parent / "model.engine"
    lines: list[str] = []
    options = EngineOptions(precision="fp16", min_batch=1, opt_batch=2, max_batch=8, workspace_mb=256)
    sidecar = build_engine(onnx_file, engine, options, log=lines.append)

    assert trt.calls["networks"] == [0]  # explicit batch, no deprecated flag
    assert trt.config.flags == {"FP16"}
    assert trt.config.pools == {"WORKSPACE": 256 << 20}
    assert trt.config.profiles[0].name == "input"
    assert trt.config.profiles[0].shapes == [[1, *CHW], [2, *CHW], [8, *CHW]]
    assert trt.config.default_device_type == "GPU" and trt.config.hardware_compatibility_level == "NONE"
    assert sidecar == read_sidecar(engine)
    assert sidecar.tensorrt_version == "10.3.0" and sidecar.gpu_name == "NVIDIA Fake GPU"
    assert sidecar.compute_capability == "8.6"
    assert sidecar.input_name == "input" and sidecar.input_shape == [-1, *CHW] and sidecar.output_name == "logits"
    assert sidecar.options == options.to_dict()
    assert sidecar.onnx_sha256 == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    assert sidecar.engine_sha256 == hashlib.sha256(engine.read_bytes()).hexdigest()
    assert sidecar.created.endswith("Z")
    assert sorted(p.name for p in engine.parent.iterdir()) == ["model.engine", "model.engine.json", "model.onnx"]
    assert any(
        line.startswith("building fp16 engine (weakly typed, TensorRT 10.3), batch 1..8 (opt 2), workspace 256 MB")
        for line in lines
    )


def test_build_int8_engine_from_qdq_model_enables_int8_and_fp16(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    trt, _ = _install_fakes(monkeypatch, qdq=True)
    build_engine(onnx_file, onnx_file.parent / "model.engine", EngineOptions(precision="int8"), log=lambda m: None)
    assert trt.config.flags == {"FP16", "INT8"}


def test_precision_must_match_the_model(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    _install_fakes(monkeypatch, qdq=False)
    with pytest.raises(UserInputError, match="precision int8 needs an explicitly quantized model"):
        build_engine(onnx_file, onnx_file.parent / "m.engine", EngineOptions(precision="int8"), log=lambda m: None)
    _install_fakes(monkeypatch, qdq=True)
    with pytest.raises(UserInputError, match="the model has Q/DQ .int8. nodes but tensorrt precision is fp16"):
        build_engine(onnx_file, onnx_file.parent / "m.engine", EngineOptions(precision="fp16"), log=lambda m: None)
    assert not (onnx_file.parent / "m.engine").exists()


def test_build_dla_and_compatibility_settings(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    trt, _ = _install_fakes(monkeypatch, dla_cores=2, input=("input", [4, *CHW]))
    options = EngineOptions(
        precision="fp16",
        min_batch=4,
        opt_batch=4,
        max_batch=4,
        dla_core=1,
        hardware_compatibility="ampere_plus",
        version_compatible=True,
        builder_optimization_level=4,
    )
    sidecar = build_engine(onnx_file, onnx_file.parent / "m.engine", options, log=lambda m: None)
    config = trt.config
    assert config.default_device_type == "DLA" and config.DLA_core == 1
    assert config.flags == {"FP16", "GPU_FALLBACK", "VERSION_COMPATIBLE"}
    assert config.hardware_compatibility_level == "AMPERE_PLUS" and config.builder_optimization_level == 4
    assert config.profiles == []  # fixed-batch model: TensorRT derives the profile itself
    assert sidecar.input_shape == [-1, *CHW] and sidecar.engine_options.fixed_batch == 4

    with pytest.raises(UserInputError, match="tensorrt.dla_core 2: this machine has 2 DLA core"):
        options = EngineOptions(min_batch=4, opt_batch=4, max_batch=4, dla_core=2)
        build_engine(onnx_file, onnx_file.parent / "m.engine", options, log=lambda m: None)


def test_build_refuses_what_the_model_or_gpu_cannot_do(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    quiet = {"log": lambda m: None}
    _install_fakes(monkeypatch, input=("input", [1, *CHW]))
    with pytest.raises(UserInputError, match="fixed batch size of 1, but tensorrt min/opt/max_batch are 1/1/8"):
        build_engine(onnx_file, onnx_file.parent / "m.engine", EngineOptions(max_batch=8), **quiet)
    _install_fakes(monkeypatch, capability=(7, 5))
    with pytest.raises(UserInputError, match="ampere_plus: .*Ampere or newer GPUs only; this GPU is NVIDIA Fake GPU"):
        build_engine(
            onnx_file, onnx_file.parent / "m.engine", EngineOptions(hardware_compatibility="ampere_plus"), **quiet
        )
    _install_fakes(monkeypatch, version="8.2.1")
    with pytest.raises(DependencyError, match="TensorRT 8.2.1 has no tensor-name API .*build_engine.sh"):
        build_engine(onnx_file, onnx_file.parent / "m.engine", EngineOptions(), **quiet)
    _install_fakes(monkeypatch, version="9.2.0")
    with pytest.raises(DependencyError, match="TensorRT 9.2 is not supported"):
        build_engine(onnx_file, onnx_file.parent / "m.engine", EngineOptions(), **quiet)
    _install_fakes(monkeypatch)  # 10.3: the level arrived in 10.9
    with pytest.raises(UserInputError, match="same_compute_capability needs TensorRT >= 10.9; this machine builds"):
        options = EngineOptions(hardware_compatibility="same_compute_capability")
        build_engine(onnx_file, onnx_file.parent / "m.engine", options, **quiet)
    trt, _ = _install_fakes(monkeypatch, version="10.9.0")
    del trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY  # a 10.9 build without it: refused, not guessed
    with pytest.raises(DependencyError, match="same_compute_capability needs TensorRT >= 10.9"):
        build_engine(onnx_file, onnx_file.parent / "m.engine", options, **quiet)
    assert not (onnx_file.parent / "m.engine").exists()


@pytest.mark.parametrize(
    ("version", "flags", "fp16_flag"),
    [
        ("8.5.2", 1 << 0, True),  # EXPLICIT_BATCH (kEXPLICIT_BATCH = 0), weakly typed
        ("10.3.0", 0, True),  # explicit batch is implied; weakly typed
        ("10.13.0", 1 << 1, False),  # STRONGLY_TYPED (kSTRONGLY_TYPED = 1); precision flags deprecated
        ("11.0.0", 0, False),  # always strongly typed; the deprecated flag is 0 and ignored
    ],
)
def test_network_flags_and_precision_follow_the_release(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path, version: str, flags: int, fp16_flag: bool
) -> None:
    trt, _ = _install_fakes(monkeypatch, version=version, fp16=not fp16_flag)  # strongly typed: an fp16 model
    lines: list[str] = []
    build_engine(onnx_file, onnx_file.parent / "m.engine", EngineOptions(precision="fp16"), log=lines.append)
    assert trt.calls["networks"] == [flags]
    assert ("FP16" in trt.config.flags) is fp16_flag
    typing = "weakly" if fp16_flag else "strongly"
    assert any(f"({typing} typed, TensorRT {version.rsplit('.', 1)[0]})" in line for line in lines)


def test_a_strongly_typed_fp16_build_of_an_fp32_model_is_refused(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    _install_fakes(monkeypatch, version="10.13.0")
    with pytest.raises(UserInputError, match="strongly typed fp16 engine .*this model is fp32: build from the fp16"):
        build_engine(onnx_file, onnx_file.parent / "m.engine", EngineOptions(precision="fp16"), log=lambda m: None)
    trt, _ = _install_fakes(monkeypatch, version="10.13.0")  # weak typing asked for explicitly: still possible
    build_engine(
        onnx_file, onnx_file.parent / "m.engine", EngineOptions(precision="fp16", strongly_typed=False), log=print
    )
    assert trt.calls["networks"] == [0] and "FP16" in trt.config.flags
    _install_fakes(monkeypatch, version="11.0.0")
    with pytest.raises(UserInputError, match="strongly_typed: false is not possible: TensorRT 11.0 builds strongly"):
        build_engine(onnx_file, onnx_file.parent / "m.engine", EngineOptions(strongly_typed=False), log=print)


def test_sidecar_records_the_platform_and_a_foreign_one_is_refused_before_tensorrt(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    import platform

    _install_fakes(monkeypatch)
    engine = onnx_file.parent / "m.engine"
    sidecar = build_engine(onnx_file, engine, EngineOptions(), log=lambda m: None)
    assert sidecar.platform == platform.machine() and read_sidecar(engine).platform == platform.machine()
    foreign = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    data = json.loads(sidecar_path(engine).read_text())
    data.update(platform=foreign, device_model="NVIDIA Jetson AGX Orin Developer Kit")
    sidecar_path(engine).write_text(json.dumps(data))
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # refused before TensorRT is imported at all
    with pytest.raises(EngineMismatchError, match=f"built on {foreign} \\(NVIDIA Jetson AGX Orin.*this machine is"):
        TensorRTRunner(engine).activate()


def test_parser_and_builder_failures_are_one_line_errors(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    errors = [
        (3, "NonMaxSuppression", "unsupported operator"),
        (7, "Loop", "unsupported"),
        (8, "If", "x"),
        (9, "If", "y"),
    ]
    _install_fakes(monkeypatch, parse_errors=errors)
    with pytest.raises(ModelFileError) as caught:
        build_engine(onnx_file, onnx_file.parent / "m.engine", EngineOptions(), log=lambda m: None)
    assert str(caught.value) == (
        f"{onnx_file}: the TensorRT 10.3.0 ONNX parser rejected the model: node 3 (NonMaxSuppression "
        "'/nonmaxsuppression_3'): unsupported operator; node 7 (Loop '/loop_7'): unsupported; node 8 (If '/if_8'): x "
        "(+1 more)"
    )
    _install_fakes(monkeypatch, build_error="Could not find any implementation for node /conv (out of memory?)")
    lines: list[str] = []
    with pytest.raises(VerificationError, match="could not build a fp16 engine: Could not find any implementation"):
        build_engine(onnx_file, onnx_file.parent / "m.engine", EngineOptions(), log=lines.append)
    assert lines[-1].startswith("TensorRT error: Could not find any implementation")
    assert not (onnx_file.parent / "m.engine").exists()


def test_timing_cache_is_created_reused_and_replaced_when_foreign(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    cache = onnx_file.parent / "timing.cache"
    options = EngineOptions(timing_cache=cache)
    _install_fakes(monkeypatch)
    build_engine(onnx_file, onnx_file.parent / "m.engine", options, log=lambda m: None)
    assert cache.read_bytes() == b"NVIDIA Fake GPU:1"
    lines: list[str] = []
    _install_fakes(monkeypatch)
    build_engine(onnx_file, onnx_file.parent / "m.engine", options, log=lines.append)
    assert cache.read_bytes() == b"NVIDIA Fake GPU:2"
    assert any("tactic timings reused" in line for line in lines)
    cache.write_bytes(b"Other GPU:40")
    lines.clear()
    _install_fakes(monkeypatch)
    build_engine(onnx_file, onnx_file.parent / "m.engine", options, log=lines.append)
    assert any("is from another GPU or TensorRT release; starting a new one" in line for line in lines)
    assert cache.read_bytes() == b"NVIDIA Fake GPU:1"
    assert not list(onnx_file.parent.glob(".*tmp*"))


# ------------------------------------------------------------------------------------------ runner


def _built_engine(monkeypatch: pytest.MonkeyPatch, onnx_file: Path, **options: Any) -> tuple[Path, Any, Any]:
    trt, cuda = _install_fakes(monkeypatch)
    engine = onnx_file.parent / "model.engine"
    build_engine(onnx_file, engine, EngineOptions(**options), log=lambda m: None)
    return engine, trt, cuda


def test_runner_infers_within_the_profile_and_frees_everything(
    monkeypatch: pytest.MonkeyPatch, onnx_file: Path
) -> None:
    engine, trt, cuda = _built_engine(monkeypatch, onnx_file, min_batch=1, opt_batch=4, max_batch=8)
    blocks_before = set(_Memory.blocks)
    runner = TensorRTRunner(engine, name="trt_fp16")
    with runner:
        assert cuda.stack  # the primary context is current while active
        assert runner.fixed_batch is None and runner.batch_profile == (1, 4, 8)
        for count in (3, 8, 1, 3):
            batch = _batch(count, offset=count)
            logits = runner.infer(batch)
            assert logits.dtype == np.float32 and logits.shape == (count, CLASSES)
            np.testing.assert_allclose(logits, _expected(batch), rtol=1e-6)
        with pytest.raises(UserInputError, match="takes batches of 1..8 images .its optimization profile., got 9"):
            runner.infer(_batch(9))
        with pytest.raises(UserInputError, match=r"input batch has shape \[2, 3, 5, 5\], the engine expects N x 3 x 4"):
            runner.infer(np.zeros((2, 3, 5, 5), np.float32))
        description = runner.describe()
        assert description["runtime"] == "tensorrt" and description["version"] == "10.3.0"
        assert description["providers"] == ["NVIDIA Fake GPU (compute capability 8.6)"]
        assert description["batch_profile"] == [1, 4, 8] and description["precision"] == "fp16"
    assert not runner.is_active and not cuda.stack
    assert set(_Memory.blocks) == blocks_before  # every device allocation freed
    assert trt.runtime.engine_host_code_allowed is False and trt.runtime.DLA_core == -1


def test_runner_splits_and_pads_any_batch(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    engine, *_ = _built_engine(monkeypatch, onnx_file, min_batch=2, opt_batch=2, max_batch=4)
    with TensorRTRunner(engine) as runner:
        sizes: list[int] = []
        real_infer = runner.infer
        monkeypatch.setattr(runner, "infer", lambda b: sizes.append(len(b)) or real_infer(b))
        for count, chunks in ((11, [4, 4, 3]), (1, [2]), (9, [4, 4, 2]), (3, [3])):
            batch = _batch(count, offset=0.5)
            np.testing.assert_allclose(runner.infer_any_batch(batch), _expected(batch), rtol=1e-6)
            assert sizes == chunks, count
            sizes.clear()


def test_runner_for_a_fixed_batch_engine(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    _install_fakes(monkeypatch, input=("input", [2, *CHW]))
    engine = onnx_file.parent / "model.engine"
    build_engine(onnx_file, engine, EngineOptions(min_batch=2, opt_batch=2, max_batch=2), log=lambda m: None)
    runner = TensorRTRunner(engine)
    assert runner.fixed_batch == 2  # from the sidecar, before activation
    with runner:
        assert runner.fixed_batch == 2
        batch = _batch(5)
        np.testing.assert_allclose(runner.infer_any_batch(batch), _expected(batch), rtol=1e-6)


def test_runner_times_with_cuda_events(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    engine, _, cuda = _built_engine(monkeypatch, onnx_file, max_batch=4)
    with TensorRTRunner(engine) as runner:
        assert runner.timed_infer(_batch(2)) == 0.25  # fake clock: each event record advances 0.25 ms
        timings = runner.time_inference(_batch(4), iterations=5, warmup=3)
        assert timings == [0.25] * 5
        assert runner.time_inference(_batch(1), iterations=2, warmup=0, include_copies=False) == [0.25, 0.25]
        with pytest.raises(UserInputError, match="need iterations >= 1"):
            runner.time_inference(_batch(1), iterations=0)
    with pytest.raises(UserInputError, match="runner is not active"):
        runner.timed_infer(_batch(1))


def test_runner_checks_the_sidecar_before_deserializing(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    engine, *_ = _built_engine(monkeypatch, onnx_file)
    trt, cuda = _install_fakes(monkeypatch, version="10.4.0")
    with pytest.raises(EngineMismatchError, match=f"engine {engine} was built with TensorRT 10.3.0"):
        TensorRTRunner(engine).activate()
    assert trt.calls["deserialize"] == 0 and not cuda.stack

    _install_fakes(monkeypatch, capability=(8, 9))
    with pytest.raises(EngineMismatchError, match="an engine runs only on the GPU model it was built for"):
        TensorRTRunner(engine).activate()


def test_runner_refuses_a_stale_or_corrupt_engine(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    engine, *_ = _built_engine(monkeypatch, onnx_file)
    engine.write_bytes(engine.read_bytes() + b" ")
    with pytest.raises(ModelFileError, match="does not match its sidecar model.engine.json .different file hash."):
        TensorRTRunner(engine).activate()
    sidecar = read_sidecar(engine)
    write_sidecar(engine, EngineSidecar(**{**sidecar.to_dict(), "engine_sha256": None}))
    engine.write_bytes(b"garbage")
    trt, cuda = _install_fakes(monkeypatch)
    with pytest.raises(ModelFileError, match="cannot deserialize the engine .Serialization assertion failed.*rebuild"):
        TensorRTRunner(engine).activate()
    assert not cuda.stack  # the context pushed for loading was popped again


def test_runner_loads_version_compatible_and_dla_engines(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    trt, _ = _install_fakes(monkeypatch, dla_cores=1, input=("input", [1, *CHW]))
    engine = onnx_file.parent / "model.engine"
    options = EngineOptions(max_batch=1, dla_core=0, version_compatible=True)
    build_engine(onnx_file, engine, options, log=lambda m: None)
    trt, _ = _install_fakes(monkeypatch, version="10.7.0")
    with TensorRTRunner(engine) as runner:
        assert trt.runtime.engine_host_code_allowed is True and trt.runtime.DLA_core == 0
        assert runner.describe()["providers"] == [
            "DLA core 0 with GPU fallback on NVIDIA Fake GPU (compute capability 8.6)"
        ]
        assert runner.infer(_batch(1)).shape == (1, CLASSES)


# ------------------------------------------------------------------------------------------ real GPU


def _tiny_onnx(path: Path) -> Path:
    """Conv(3->8, 3x3) + Relu + GlobalAveragePool + Flatten + Gemm(8->5), dynamic batch, opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(0, 0.5, (CLASSES, 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, CLASSES).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _qdq_onnx(source: Path, target: Path, calibration: np.ndarray) -> Path:
    """Symmetric signed int8 QDQ as edgetl's TensorRT targets write it (Q/DQ on compute-op inputs, float bias)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv", "Gemm"],
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,  # TensorRT dequantizes int8 only; it fuses a float bias itself
            "OpTypesToExcludeOutputQuantization": ["Conv", "Gemm"],
        },
    )
    return target


def _ort(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": batch})[0]


@pytest.fixture
def real_tensorrt() -> Any:
    trt = pytest.importorskip("tensorrt", reason="needs TensorRT (pip install 'edgetl[tensorrt]' on a GPU machine)")
    pytest.importorskip("pycuda.driver", reason="needs pycuda and an NVIDIA driver")
    try:
        tensorrt_environment()
    except DependencyError as error:
        pytest.skip(f"no usable GPU: {error}")
    return trt


@pytest.mark.gpu
def test_gpu_fp16_engine_matches_onnx_runtime(real_tensorrt: Any, tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    engine = tmp_path / "tiny_fp16.engine"
    options = EngineOptions(precision="fp16", min_batch=1, opt_batch=4, max_batch=8, workspace_mb=256)
    options = EngineOptions(**{**options.to_dict(), "timing_cache": str(tmp_path / "timing.cache")})
    sidecar = build_engine(model, engine, options, log=lambda m: None)
    assert sidecar.tensorrt_version == real_tensorrt.__version__ and (tmp_path / "timing.cache").stat().st_size > 0
    batch = np.random.default_rng(1).normal(size=(11, 3, 16, 16)).astype(np.float32)
    reference = _ort(model, batch)
    with TensorRTRunner(engine) as runner:
        logits = runner.infer_any_batch(batch)  # 8 + 3
        np.testing.assert_allclose(runner.infer(batch[:3]), reference[:3], atol=2e-2, rtol=2e-2)
    np.testing.assert_allclose(logits, reference, atol=2e-2, rtol=2e-2)
    assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.9


@pytest.mark.gpu
def test_gpu_int8_engine_from_qdq_matches_onnx_runtime(real_tensorrt: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    calibration = rng.normal(size=(16, 3, 16, 16)).astype(np.float32)
    model = _qdq_onnx(_tiny_onnx(tmp_path / "tiny.onnx"), tmp_path / "tiny_int8.onnx", calibration)
    engine = tmp_path / "tiny_int8.engine"
    build_engine(model, engine, EngineOptions(precision="int8", max_batch=4, workspace_mb=256), log=lambda m: None)
    batch = rng.normal(size=(4, 3, 16, 16)).astype(np.float32)
    reference = _ort(model, batch)
    with TensorRTRunner(engine) as runner:
        logits = runner.infer(batch)
    scale = float(np.abs(reference).max())
    assert float(np.abs(logits - reference).max()) <= 0.1 * scale + 1e-3


@pytest.mark.gpu
def test_gpu_cuda_event_timer(real_tensorrt: Any, tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    engine = tmp_path / "tiny.engine"
    build_engine(model, engine, EngineOptions(precision="fp16", max_batch=8, workspace_mb=256), log=lambda m: None)
    with TensorRTRunner(engine) as runner:
        batch = np.zeros((8, 3, 16, 16), np.float32)
        timings = runner.time_inference(batch, iterations=20, warmup=5)
        single = runner.timed_infer(batch[:1])
        compute_only = runner.time_inference(batch, iterations=20, warmup=0, include_copies=False)
    assert len(timings) == 20 and all(0.0 < t < 1000.0 for t in timings)
    assert 0.0 < single < 1000.0
    assert np.median(compute_only) <= np.median(timings) * 1.5
