"""Build a TensorRT engine from an ONNX model, and the trtexec command line that builds the same engine.

TensorRT and pycuda are imported inside the functions that need them, so this module imports on
any machine (a laptop renders the trtexec command, CI tests the option handling). What differs
between releases comes from `versions`: the Python builder runs on 8.5+ (explicit-batch networks,
the tensor-name API), weakly typed with precision flags up to 10.11 and strongly typed from 10.12
(11 has no other mode); int8 always comes from the model's explicit Q/DQ nodes (no calibrator).
The engine is written as a plain serialized plan with a JSON sidecar next to it (`sidecar`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from edgetl.backends.tensorrt.options import EngineOptions
from edgetl.backends.tensorrt.sidecar import EngineSidecar, this_platform, utc_now, write_sidecar
from edgetl.backends.tensorrt.versions import TensorRTRelease, release_of
from edgetl.errors import DependencyError, EdgeTLError, ModelFileError, UserInputError, VerificationError, first_line
from edgetl.files import atomic_path, sha256_file

if TYPE_CHECKING:  # NVIDIA's stubs (tensorrt-stubs) in CI's mypy step; at run time imported where used
    import tensorrt as trt

INSTALL_HINT = (
    "pip install 'edgetl[tensorrt]' on a machine with an NVIDIA driver, or use the NGC/JetPack image (docker/)"
)
TENSORRT_MISSING = f"TensorRT is not installed: {INSTALL_HINT}"
PYCUDA_MISSING = f"pycuda is not installed: {INSTALL_HINT}"
MIB = 1 << 20

Log = Callable[[str], None]


def import_tensorrt() -> Any:
    """`import tensorrt`, or DependencyError with the install hint (ImportError, missing libnvinfer, stub wheel)."""
    try:
        import tensorrt as trt
    except Exception as error:  # ImportError; OSError when libnvinfer is missing; the PyPI stub raises others
        raise DependencyError(f"{TENSORRT_MISSING} ({first_line(error)})") from None
    if not hasattr(trt, "Runtime") or not hasattr(trt, "__version__"):
        raise DependencyError(f"{TENSORRT_MISSING} (the installed tensorrt package has no TensorRT bindings)")
    return trt


def import_pycuda() -> Any:
    """`pycuda.driver`, or DependencyError with the install hint. pycuda.autoinit is never used."""
    try:
        import pycuda.driver as cuda
    except Exception as error:  # ImportError, or OSError when libcuda is missing
        raise DependencyError(f"{PYCUDA_MISSING} ({first_line(error)})") from None
    return cuda


def cuda_device(cuda: Any, index: int = 0) -> Any:
    """The pycuda Device `index` after cuInit; DependencyError when there is no usable NVIDIA GPU."""
    try:
        cuda.init()
        count = cuda.Device.count()
        if index >= count:
            raise DependencyError(f"CUDA device {index} does not exist (this machine has {count} NVIDIA GPU(s))")
        return cuda.Device(index)
    except DependencyError:
        raise
    except Exception as error:  # pycuda.driver.Error (cuInit failed: no driver / no device)
        raise DependencyError(
            f"no usable NVIDIA GPU: CUDA initialization failed ({first_line(error)}); TensorRT engines need an "
            "NVIDIA GPU with its driver"
        ) from None


def _gpu_from_pycuda(index: int) -> dict[str, str]:
    device = cuda_device(import_pycuda(), index)
    major, minor = device.compute_capability()
    return {"gpu_name": str(device.name()), "compute_capability": f"{major}.{minor}"}


def _gpu_from_cuda_runtime(index: int) -> dict[str, str]:
    """Fallback when pycuda is absent: the CUDA runtime through NVIDIA's cuda-python bindings."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6 layout
        except ImportError:
            raise DependencyError(PYCUDA_MISSING) from None
    error, props = cudart.cudaGetDeviceProperties(index)
    if error != cudart.cudaError_t.cudaSuccess:
        raise DependencyError(f"no usable NVIDIA GPU: cudaGetDeviceProperties({index}) failed ({error})")
    name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return {"gpu_name": name, "compute_capability": f"{props.major}.{props.minor}"}


def tensorrt_environment(device: int = 0) -> dict[str, Any]:
    """TensorRT version, GPU name and compute capability of this machine (what a sidecar is checked against)."""
    trt = import_tensorrt()
    try:
        gpu = _gpu_from_pycuda(device)
    except DependencyError as missing:
        if "pycuda is not installed" not in str(missing):
            raise
        gpu = _gpu_from_cuda_runtime(device)
    return {"tensorrt_version": str(trt.__version__), "device": device, **gpu}


# ---------------------------------------------------------------------------------------------- trtexec


def dims(shape: Any) -> tuple[int, ...]:
    """A TensorRT Dims (or any sequence) as ints: Dims has __len__ and __getitem__, and no __iter__ in the stubs."""
    return tuple(int(shape[i]) for i in range(len(shape)))


def _is_dynamic(dim: Any) -> bool:
    return dim is None or isinstance(dim, str) or (isinstance(dim, int) and dim < 0)


def _fixed_batch_error(model: str | Path, batch: int, options: EngineOptions) -> UserInputError:
    return UserInputError(
        f"{model}: the model has a fixed batch size of {batch}, but tensorrt min/opt/max_batch are "
        f"{options.min_batch}/{options.opt_batch}/{options.max_batch}: set all three to {batch}, or export the "
        "model with export.batch_size: dynamic"
    )


def _shape_spec_name(name: str) -> str:
    # trtexec splits shape specs on ':' and ','; names containing them are wrapped in single quotes.
    return f"'{name}'" if (":" in name or "," in name) else name


def trtexec_command(
    onnx_path: str | Path,
    engine_path: str | Path,
    options: EngineOptions,
    input_name: str,
    input_shape: Sequence[Any],
    release: TensorRTRelease,
) -> list[str]:
    """The trtexec argv for `release` that builds the same engine as `build_engine`, e.g. on a device without edgetl.

    Every flag is one that release's trtexec accepts (see `versions`; an unknown option makes trtexec
    exit). `input_shape` is the model input NCHW; a batch of -1/None/a name means dynamic, in which
    case the optimization profile is passed as --minShapes/--optShapes/--maxShapes. Join with
    `shlex.join` for a shell.
    """
    options.check_release(release, f"this trtexec command (TensorRT {release})")
    shape = list(input_shape)
    if len(shape) < 2 or any(_is_dynamic(d) or int(d) < 1 for d in shape[1:]):
        raise UserInputError(f"{onnx_path}: input shape {shape} must be N x C x H x W with fixed C, H, W")
    command = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    if options.strongly_typed_for(release):
        if release.major < 11:  # 11 is always strongly typed; its --stronglyTyped is a deprecated no-op
            command.append("--stronglyTyped")  # precision comes from the model: Q/DQ int8, an fp16 ONNX
    else:
        if options.precision in ("fp16", "int8"):
            command.append("--fp16")  # float layers may run in fp16 (for int8: the ones the Q/DQ nodes leave in float)
        if options.precision == "int8":
            command.append("--int8")  # scales come from the model's Q/DQ nodes; no calibration cache
    if _is_dynamic(shape[0]):
        chw = "x".join(str(int(d)) for d in shape[1:])
        name = _shape_spec_name(input_name)
        command += [
            f"--minShapes={name}:{options.min_batch}x{chw}",
            f"--optShapes={name}:{options.opt_batch}x{chw}",
            f"--maxShapes={name}:{options.max_batch}x{chw}",
        ]
    elif options.profile != (int(shape[0]),) * 3:
        raise _fixed_batch_error(onnx_path, int(shape[0]), options)
    command.append(release.workspace_flag(options.workspace_mb))
    if options.timing_cache is not None:
        command.append(f"--timingCacheFile={options.timing_cache}")
    if options.dla_core is not None:
        command.append(f"--useDLACore={options.dla_core}")
        if options.gpu_fallback:
            command.append("--allowGPUFallback")
    if options.hardware_compatibility == "ampere_plus":
        command.append("--hardwareCompatibilityLevel=ampere+")
    elif options.hardware_compatibility == "same_compute_capability":
        command.append("--hardwareCompatibilityLevel=sameComputeCapability")
    if options.version_compatible:
        command.append("--versionCompatible")
    if options.builder_optimization_level is not None:
        command.append(f"--builderOptimizationLevel={options.builder_optimization_level}")
    command.append(release.build_only_flag)  # build only, like build_engine
    return command


# ---------------------------------------------------------------------------------------------- logger

_LOGGER: Any = None


def tensorrt_logger() -> Any:
    """One process-wide trt.ILogger (TensorRT keeps the first logger it is given): forwards warnings and
    errors to the current `log` callable and keeps the errors, so a failed build can say why in one line."""
    import tensorrt as trt

    global _LOGGER
    if _LOGGER is None:

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.forward: Log | None = None
                self.errors: list[str] = []

            def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
                level = int(severity)
                if level <= int(trt.ILogger.Severity.ERROR):
                    self.errors.append(str(msg))
                    if self.forward is not None:
                        self.forward(f"TensorRT error: {msg}")
                elif level == int(trt.ILogger.Severity.WARNING) and self.forward is not None:
                    self.forward(f"TensorRT warning: {msg}")

            def begin(self, forward: Log | None) -> None:
                self.forward = forward
                self.errors = []

        _LOGGER = _Logger()
    return _LOGGER


# ---------------------------------------------------------------------------------------------- build


def _parser_error_text(parser: trt.OnnxParser, limit: int = 3) -> str:
    parts = []
    for index in range(min(parser.num_errors, limit)):
        error = parser.get_error(index)
        node, desc = error.node(), error.desc()
        operator = error.node_operator() if hasattr(error, "node_operator") else ""
        node_name = error.node_name() if hasattr(error, "node_name") else ""
        where = f"node {node}" if node >= 0 else "model"
        detail = " ".join(part for part in (operator, repr(node_name) if node_name else "") if part)
        parts.append(f"{where}{f' ({detail})' if detail else ''}: {desc}")
    extra = parser.num_errors - limit
    return "; ".join(parts) + (f" (+{extra} more)" if extra > 0 else "")


def _network_io(network: trt.INetworkDefinition, onnx_path: Path) -> tuple[str, list[int], str]:
    """(input name, NCHW shape with -1 for a dynamic batch, output name) of a one-image-input classifier."""
    if network.num_inputs != 1:
        names = ", ".join(network.get_input(i).name for i in range(network.num_inputs))
        raise ModelFileError(f"{onnx_path}: {network.num_inputs} inputs ({names}); an edgetl model has one image input")
    if network.num_outputs < 1:
        raise ModelFileError(f"{onnx_path}: the model has no outputs")
    tensor = network.get_input(0)
    shape = list(dims(tensor.shape))
    if len(shape) != 4 or any(d < 1 for d in shape[1:]):
        raise ModelFileError(
            f"{onnx_path}: input {tensor.name!r} has shape {shape}; expected N x C x H x W with only the batch "
            "dimension dynamic"
        )
    return str(tensor.name), shape, str(network.get_output(0).name)


def _has_qdq(network: trt.INetworkDefinition) -> bool:
    import tensorrt as trt

    kinds = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    return any(network.get_layer(i).type in kinds for i in range(network.num_layers))


def _has_fp16(network: trt.INetworkDefinition) -> bool:
    """True when some layer computes in fp16 (an fp16 ONNX model; in a strongly typed network types are the model's)."""
    import tensorrt as trt

    return any(
        network.get_layer(i).get_output(j).dtype == trt.DataType.HALF
        for i in range(network.num_layers)
        for j in range(network.get_layer(i).num_outputs)
    )


def _check_precision(options: EngineOptions, has_qdq: bool, onnx_path: Path) -> None:
    if options.precision == "int8" and not has_qdq:
        raise UserInputError(
            f"{onnx_path}: precision int8 needs an explicitly quantized model (QuantizeLinear/DequantizeLinear "
            "nodes; TensorRT 10 builds here use no calibrator): build from the onnx_int8 artefact or use fp16"
        )
    if options.precision != "int8" and has_qdq:
        raise UserInputError(
            f"{onnx_path}: the model has Q/DQ (int8) nodes but tensorrt precision is {options.precision}: "
            "set precision int8, or build from the float model"
        )


def _capability(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def _check_build_machine(options: EngineOptions, env: dict[str, Any]) -> TensorRTRelease:
    """Options this GPU / TensorRT cannot build, refused before a long build fails (limits from NvInfer.h)."""
    import tensorrt as trt

    try:
        release = release_of(str(trt.__version__))
    except UserInputError as error:
        raise DependencyError(f"{error}; build with the bundle's trtexec script (build_engine.sh)") from None
    if not release.python_api:
        raise DependencyError(
            f"TensorRT {trt.__version__} has no tensor-name API (8.5+), which edgetl's builder and runner use: "
            "build with the bundle's trtexec script (build_engine.sh) and run the engine from your application"
        )
    options.check_release(release, "this machine")
    cc = _capability(env["compute_capability"])
    gpu = f"{env['gpu_name']} (compute capability {env['compute_capability']})"
    if options.hardware_compatibility == "ampere_plus" and cc < (8, 0):
        raise UserInputError(
            f"tensorrt.hardware_compatibility ampere_plus: engines are built for it on Ampere or newer GPUs "
            f"only; this GPU is {gpu}"
        )
    if options.hardware_compatibility == "same_compute_capability":
        if not hasattr(trt.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY"):
            raise DependencyError(
                f"tensorrt.hardware_compatibility same_compute_capability needs TensorRT >= 10.9 "
                f"(found {trt.__version__})"
            )
        if cc < (7, 5):
            raise UserInputError(
                f"tensorrt.hardware_compatibility same_compute_capability needs a Turing or newer GPU; this is {gpu}"
            )
    if options.version_compatible and cc < (7, 0):
        raise UserInputError(f"tensorrt.version_compatible needs a Volta or newer GPU; this is {gpu}")
    return release


def _load_timing_cache(config: trt.IBuilderConfig, path: Path, log: Log) -> None:
    """Attach the persisted timing cache (or a fresh one when missing or from another GPU/TensorRT)."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        if data:
            log(f"timing cache {path} is from another GPU or TensorRT release; starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, True)
    elif data:
        log(f"timing cache {path}: {len(data) / 1024:.0f} KiB of tactic timings reused")


def _save_timing_cache(config: trt.IBuilderConfig, path: Path, log: Log) -> None:
    """Write the build's timing cache atomically, merged with any entries another build saved meanwhile."""
    cache = config.get_timing_cache()
    if cache is None:
        return
    merged = cache
    if path.is_file():
        on_disk = config.create_timing_cache(path.read_bytes())
        if on_disk is not None and on_disk.combine(cache, False):
            merged = on_disk
    serialized = merged.serialize()
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        handle.write(serialized)
    log(f"timing cache saved to {path}")


def network_flags(release: TensorRTRelease, strongly_typed: bool) -> int:
    """create_network flags: EXPLICIT_BATCH before 10.0 (ignored in 10, gone in 11), STRONGLY_TYPED in 10.x.

    TensorRT 11 is always strongly typed and redefined the deprecated STRONGLY_TYPED enum as 0, so no flag is set.
    """
    import tensorrt as trt

    flags = 0
    if release.needs_explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed and release.major == 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def _configure(
    builder: trt.Builder, config: trt.IBuilderConfig, options: EngineOptions, strongly_typed: bool, log: Log
) -> None:
    import tensorrt as trt

    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb * MIB)
    # Weakly typed networks (8.x-10.11): precision flags enable kernels. Explicit Q/DQ models still need
    # the INT8 flag (NVIDIA's QAT flows build them with `trtexec --int8`); FP16 lets the layers the Q/DQ
    # nodes leave in float run in fp16 instead of fp32. Strongly typed networks take no precision flags.
    if not strongly_typed and options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if not strongly_typed and options.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if options.dla_core is not None:
        cores = builder.num_DLA_cores
        if options.dla_core >= cores:
            raise UserInputError(f"tensorrt.dla_core {options.dla_core}: this machine has {cores} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        if options.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        log(f"DLA core {options.dla_core}{' with GPU fallback' if options.gpu_fallback else ', no GPU fallback'}")
    if options.hardware_compatibility == "ampere_plus":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    elif options.hardware_compatibility == "same_compute_capability":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = options.builder_optimization_level


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    options: EngineOptions,
    log: Log = print,
) -> EngineSidecar:
    """Build `engine_path` (a plain serialized TensorRT plan) and `<engine_path>.json` from `onnx_path`.

    Both files are written under temporary names and renamed into place, the engine first, so an
    interrupted build never leaves a truncated engine under the trusted name. Raises ModelFileError
    when TensorRT cannot parse the model, UserInputError for options the model or GPU cannot honour,
    VerificationError when TensorRT fails to build, DependencyError without TensorRT/pycuda/GPU.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if isinstance(options, dict):
        options = EngineOptions.from_dict(options)
    if not onnx_path.is_file():
        raise ModelFileError(f"{onnx_path}: ONNX model not found")
    import_tensorrt()
    env = tensorrt_environment()
    release = _check_build_machine(options, env)
    logger = tensorrt_logger()
    logger.begin(log)
    try:
        return _build(logger, onnx_path, engine_path, options, release, env, log)
    finally:
        logger.begin(None)


def _build(
    logger: Any,
    onnx_path: Path,
    engine_path: Path,
    options: EngineOptions,
    release: TensorRTRelease,
    env: dict[str, Any],
    log: Log,
) -> EngineSidecar:
    import tensorrt as trt

    strongly_typed = options.strongly_typed_for(release)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(release, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    log(f"parsing {onnx_path} (TensorRT {trt.__version__}, {env['gpu_name']}, sm {env['compute_capability']})")
    if not parser.parse_from_file(str(onnx_path)):  # from the file, so external weight files resolve
        raise ModelFileError(
            f"{onnx_path}: the TensorRT {trt.__version__} ONNX parser rejected the model: {_parser_error_text(parser)}"
        )
    input_name, input_shape, output_name = _network_io(network, onnx_path)
    _check_precision(options, _has_qdq(network), onnx_path)
    if strongly_typed and options.precision == "fp16" and not _has_fp16(network):
        raise UserInputError(
            f"{onnx_path}: a strongly typed fp16 engine (TensorRT {release}) takes its precision from the model, and "
            "this model is fp32: build from the fp16 ONNX (optimize.fp16.enabled: true), or set "
            "tensorrt.strongly_typed: false where the release still has precision flags (< 11)"
        )

    config = builder.create_builder_config()
    _configure(builder, config, options, strongly_typed, log)
    chw = input_shape[1:]
    if input_shape[0] < 0:
        profile = builder.create_optimization_profile()
        low, opt, high = ((batch, *chw) for batch in options.profile)
        # The bindings convert a tuple to Dims implicitly (NVIDIA's samples pass tuples); the stubs say Dims.
        profile.set_shape(input_name, cast("trt.Dims", low), cast("trt.Dims", opt), cast("trt.Dims", high))
        config.add_optimization_profile(profile)
    elif options.profile != (input_shape[0],) * 3:
        raise _fixed_batch_error(onnx_path, input_shape[0], options)
    if options.timing_cache is not None:
        _load_timing_cache(config, options.timing_cache, log)

    typing = "strongly" if strongly_typed else "weakly"
    log(
        f"building {options.precision} engine ({typing} typed, TensorRT {release}), "
        f"batch {options.min_batch}..{options.max_batch} "
        f"(opt {options.opt_batch}), workspace {options.workspace_mb} MB"
    )
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        reason = "; ".join(logger.errors[-3:]) or "no error message from TensorRT"
        raise VerificationError(f"{onnx_path}: TensorRT could not build a {options.precision} engine: {reason}")
    seconds = time.perf_counter() - started
    if options.timing_cache is not None:
        _save_timing_cache(config, options.timing_cache, log)

    with atomic_path(engine_path) as temp:
        with open(temp, "wb") as handle:
            handle.write(serialized)
        engine_sha256 = sha256_file(temp)
        size = temp.stat().st_size
    here = this_platform()
    sidecar = EngineSidecar(
        tensorrt_version=str(trt.__version__),
        gpu_name=env["gpu_name"],
        compute_capability=env["compute_capability"],
        options=options.to_dict(),
        onnx_sha256=sha256_file(onnx_path),
        input_name=input_name,
        input_shape=[-1, *chw],
        output_name=output_name,
        created=utc_now(),
        engine_sha256=engine_sha256,
        platform=here["platform"],
        device_model=here["device_model"],
    )
    try:
        write_sidecar(engine_path, sidecar)
    except OSError as error:
        engine_path.unlink(missing_ok=True)  # an engine without its sidecar cannot be loaded; do not leave one
        raise EdgeTLError(f"{engine_path}: could not write the engine sidecar ({error})") from None
    log(f"wrote {engine_path} ({size / MIB:.1f} MB) in {seconds:.1f} s")
    return sidecar
