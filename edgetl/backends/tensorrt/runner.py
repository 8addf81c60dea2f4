"""TensorRT runner: a plain serialized engine + its sidecar, run with pycuda on one CUDA stream.

The sidecar is checked against this machine (TensorRT version, GPU) before the engine is
deserialized, so a foreign engine fails with one line that says to rebuild it instead of an opaque
TensorRT error. Buffers are allocated once for the profile's largest batch (page-locked host memory,
device memory) and every call only sets the input shape, so the benchmark measures inference, not
allocation. `timed_infer` / `time_inference` time with CUDA events on the runner's stream.

tensorrt and pycuda are imported in `activate()` only, and this module imports neither torch nor
TensorRT. The CUDA context (the device's primary context, shared with TensorRT's CUDA runtime) is
pushed on the activating thread: use a runner from the thread that activated it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgetl.backends.base import Runner
from edgetl.backends.tensorrt.build import cuda_device, dims, import_pycuda, import_tensorrt, tensorrt_logger
from edgetl.backends.tensorrt.options import EngineOptions
from edgetl.backends.tensorrt.sidecar import (
    EngineSidecar,
    check_compatible,
    check_platform,
    read_sidecar,
    rebuild_command,
    this_platform,
)
from edgetl.errors import EdgeTLError, ModelFileError, UserInputError

if TYPE_CHECKING:  # NVIDIA's stubs (tensorrt-stubs) in CI's mypy step; at run time imported where used
    import tensorrt as trt


class TensorRTRunner(Runner):
    """Runs a TensorRT engine built by `edgetl.backends.tensorrt.build.build_engine`; returns float32 logits."""

    has_device_timer = True

    def __init__(self, path: str | Path, name: str | None = None, device: int = 0, threads: int | None = None) -> None:
        """`threads` is accepted like every runner's and ignored: the engine runs on the GPU."""
        self.path = Path(path)
        super().__init__(name or self.path.stem)
        self.device_index = device
        self._sidecar: EngineSidecar | None = None
        self._profile: tuple[int, int, int] | None = None  # (min, opt, max) batch read from the engine
        self._trt_version: str | None = None
        self._cuda: Any = None
        self._cuda_context: Any = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._stream: Any = None
        self._events: tuple[Any, Any] | None = None
        self._buffers: dict[str, tuple[np.ndarray, Any]] = {}  # tensor name -> (page-locked host, device)
        self._input_name = ""
        self._output_name = ""
        self._current_batch: int | None = None
        self._gpu: dict[str, str] = {}

    # ------------------------------------------------------------------------------------- description

    @property
    def sidecar(self) -> EngineSidecar:
        """The engine's sidecar (read once); ModelFileError when it is missing."""
        if self._sidecar is None:
            if not self.path.is_file():
                raise ModelFileError(f"{self.path}: TensorRT engine not found")
            self._sidecar = read_sidecar(self.path)
        return self._sidecar

    @property
    def options(self) -> EngineOptions:
        return self.sidecar.engine_options

    @property
    def batch_profile(self) -> tuple[int, int, int]:
        """(min, opt, max) batch: from the engine once active, from the sidecar before."""
        return self._profile if self._profile is not None else self.options.profile

    @property
    def min_batch(self) -> int:
        return self.batch_profile[0]

    @property
    def max_batch(self) -> int:
        return self.batch_profile[2]

    @property
    def fixed_batch(self) -> int | None:
        low, _, high = self.batch_profile
        return low if low == high else None

    def describe(self) -> dict[str, Any]:
        """Execution details for the benchmark report (runtime, version, where it runs, profile, timer)."""
        sidecar, options = self.sidecar, self.options
        gpu = self._gpu or {"gpu_name": sidecar.gpu_name, "compute_capability": sidecar.compute_capability}
        where = f"{gpu['gpu_name']} (compute capability {gpu['compute_capability']})"
        if options.dla_core is not None:
            fallback = " with GPU fallback" if options.gpu_fallback else ""
            where = f"DLA core {options.dla_core}{fallback} on {where}"
        return {
            "runtime": "tensorrt",
            "version": self._trt_version or sidecar.tensorrt_version,
            "providers": [where],
            "precision": options.precision,
            "batch_profile": list(self.batch_profile),
            "timer": "CUDA events (host-to-device copy, inference, device-to-host copy)",
            "engine": str(self.path),
        }

    # ------------------------------------------------------------------------------------- lifecycle

    def _activate(self) -> None:
        sidecar = self.sidecar
        check_platform(sidecar, this_platform()["platform"], engine_path=self.path)
        import_tensorrt()  # one clear line when it is missing
        import tensorrt as trt

        cuda = import_pycuda()
        device = cuda_device(cuda, self.device_index)
        major, minor = device.compute_capability()
        self._gpu = {"gpu_name": str(device.name()), "compute_capability": f"{major}.{minor}"}
        check_compatible(
            sidecar, str(trt.__version__), self._gpu["compute_capability"], self._gpu["gpu_name"], engine_path=self.path
        )
        data = self.path.read_bytes()
        if sidecar.engine_sha256 and hashlib.sha256(data).hexdigest() != sidecar.engine_sha256:
            raise ModelFileError(
                f"{self.path}: the engine does not match its sidecar {self.path.name}.json (different file hash); "
                f"rebuild it with `{rebuild_command(self.path)}`"
            )
        self._trt_version, self._cuda = str(trt.__version__), cuda
        self._cuda_context = device.retain_primary_context()  # the context TensorRT's CUDA runtime uses
        self._cuda_context.push()
        try:
            self._load(cuda, sidecar, data)
        except BaseException:
            self._release()
            raise

    def _load(self, cuda: Any, sidecar: EngineSidecar, data: bytes) -> None:
        import tensorrt as trt

        options = sidecar.engine_options
        logger = tensorrt_logger()
        logger.begin(None)
        runtime = self._runtime = trt.Runtime(logger)
        if options.version_compatible:
            runtime.engine_host_code_allowed = True  # the plan embeds the lean runtime (host code)
        if options.dla_core is not None:
            runtime.DLA_core = options.dla_core
        engine = self._engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            reason = "; ".join(logger.errors[-2:]) or "no error message from TensorRT"
            raise ModelFileError(
                f"{self.path}: TensorRT {trt.__version__} cannot deserialize the engine ({reason}); rebuild it with "
                f"`{rebuild_command(self.path)}`"
            )
        context = self._context = engine.create_execution_context()
        if context is None:
            raise EdgeTLError(f"{self.path}: TensorRT could not create an execution context (GPU out of memory?)")

        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [sidecar.input_name] or sidecar.output_name not in names:
            raise ModelFileError(
                f"{self.path}: engine tensors {names} do not match its sidecar (input {sidecar.input_name!r}, "
                f"output {sidecar.output_name!r}); rebuild it with `{rebuild_command(self.path)}`"
            )
        self._input_name, self._output_name = sidecar.input_name, sidecar.output_name
        static = dims(engine.get_tensor_shape(self._input_name))
        if static[0] >= 0:
            self._profile = (static[0],) * 3
            largest = static
        else:
            shapes = engine.get_tensor_profile_shape(self._input_name, 0)  # [min, opt, max] of profile 0
            low, opt, high = (dims(shape) for shape in shapes)
            self._profile = (low[0], opt[0], high[0])
            largest = high
        if tuple(largest[1:]) != sidecar.chw:
            raise ModelFileError(
                f"{self.path}: engine input is {list(largest)}, its sidecar says {sidecar.input_shape}; rebuild it"
            )

        self._stream = cuda.Stream()
        self._events = (cuda.Event(), cuda.Event())
        # Size every buffer for the largest batch: the input at the profile's max shape fixes the outputs'.
        self._allocate(engine, context, cuda, self._input_name, largest)
        if not context.set_input_shape(self._input_name, largest):
            raise ModelFileError(f"{self.path}: engine rejects its own max input shape {list(largest)}")
        self._current_batch = largest[0]
        for name in names:
            if name != self._input_name:
                self._allocate(engine, context, cuda, name, dims(context.get_tensor_shape(name)))

    def _allocate(
        self, engine: trt.ICudaEngine, context: trt.IExecutionContext, cuda: Any, name: str, shape: tuple[int, ...]
    ) -> None:
        import tensorrt as trt

        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        host = cuda.pagelocked_empty(int(np.prod(shape)), dtype)  # flat; views take the live shape
        device = cuda.mem_alloc(max(host.nbytes, 1))
        self._buffers[name] = (host, device)
        if not context.set_tensor_address(name, int(device)):
            raise ModelFileError(f"{self.path}: TensorRT refused the buffer address of tensor {name!r}")

    def _deactivate(self) -> None:
        self._release()

    def _release(self) -> None:
        """Free TensorRT objects and CUDA memory while the context is current, then pop and release it."""
        self._context = None
        self._engine = None
        self._runtime = None
        for _, device in self._buffers.values():
            device.free()
        self._buffers = {}
        self._events = None
        self._stream = None
        self._current_batch = None
        if self._cuda_context is not None:
            self._cuda.Context.pop()
            self._cuda_context.detach()
            self._cuda_context = None

    # ------------------------------------------------------------------------------------- inference

    def _stage(self, batch: np.ndarray) -> int:
        """Set the input shape for `batch` and copy it into page-locked memory; returns the batch size."""
        if not self.is_active:
            raise UserInputError(f"{self.path}: runner is not active (use `with TensorRTRunner(...)` or activate())")
        batch = np.asarray(batch)
        count = len(batch)
        low, _, high = self.batch_profile
        if not low <= count <= high:
            raise UserInputError(
                f"{self.path}: the engine takes batches of {low}..{high} images (its optimization profile), got "
                f"{count}: use infer_any_batch, or rebuild with a larger tensorrt.max_batch"
            )
        expected = self.sidecar.chw
        if tuple(batch.shape[1:]) != expected:
            raise UserInputError(
                f"{self.path}: input batch has shape {list(batch.shape)}, the engine expects N x "
                f"{' x '.join(str(d) for d in expected)}"
            )
        if count != self._current_batch:
            if not self._live_context.set_input_shape(self._input_name, (count, *expected)):
                raise UserInputError(f"{self.path}: TensorRT rejected input shape {[count, *expected]}")
            self._current_batch = count
        host, _ = self._buffers[self._input_name]
        host[: batch.size].reshape(batch.shape)[...] = batch
        return count

    @property
    def _live_context(self) -> trt.IExecutionContext:
        if self._context is None:
            raise UserInputError(f"{self.path}: runner is not active (use `with TensorRTRunner(...)` or activate())")
        return self._context

    def _output_shape(self) -> tuple[int, ...]:
        return dims(self._live_context.get_tensor_shape(self._output_name))

    def _enqueue(self, count: int, output_shape: tuple[int, ...], start: Any = None, end: Any = None) -> None:
        """Queue host-to-device copy, inference and device-to-host copy on the stream (events around them)."""
        cuda, stream = self._cuda, self._stream
        in_host, in_device = self._buffers[self._input_name]
        out_host, out_device = self._buffers[self._output_name]
        if start is not None:
            start.record(stream)
        cuda.memcpy_htod_async(in_device, in_host[: count * int(np.prod(self.sidecar.chw))], stream)
        if not self._live_context.execute_async_v3(stream.handle):
            raise EdgeTLError(f"{self.path}: TensorRT failed to enqueue inference (execute_async_v3 returned False)")
        cuda.memcpy_dtoh_async(out_host[: int(np.prod(output_shape))], out_device, stream)
        if end is not None:
            end.record(stream)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32) for a batch within the engine's profile; see infer_any_batch for any size."""
        count = self._stage(batch)
        shape = self._output_shape()
        self._enqueue(count, shape)
        self._stream.synchronize()
        out_host, _ = self._buffers[self._output_name]
        return np.array(out_host[: int(np.prod(shape))].reshape(shape), dtype=np.float32)

    def infer_any_batch(self, batch: np.ndarray) -> np.ndarray:
        """Any batch size: split into chunks of max_batch, pad a chunk below min_batch with its last image."""
        low, _, high = self.batch_profile
        if low <= len(batch) <= high:
            return self.infer(batch)
        if len(batch) == 0:
            raise UserInputError(f"{self.path}: empty batch")
        outputs = []
        for start in range(0, len(batch), high):
            chunk = batch[start : start + high]
            real = len(chunk)
            if real < low:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], low - real, axis=0)])
            outputs.append(self.infer(chunk)[:real])
        return np.concatenate(outputs)

    def timed_infer(self, batch: np.ndarray) -> float:
        """One inference of `batch` (within the profile), in milliseconds measured with CUDA events."""
        count = self._stage(batch)
        start, end = self._events  # type: ignore[misc]
        self._enqueue(count, self._output_shape(), start, end)
        end.synchronize()
        return float(end.time_since(start))

    def time_inference(
        self, batch: np.ndarray, iterations: int = 100, warmup: int = 10, include_copies: bool = True
    ) -> list[float]:
        """Per-iteration latency in ms from CUDA events, after `warmup` untimed runs (the input is staged once).

        With include_copies (default) each sample spans host-to-device copy, inference and
        device-to-host copy, as `infer` does; without, only `execute_async_v3`.
        """
        if iterations < 1 or warmup < 0:
            raise UserInputError(f"time_inference: need iterations >= 1 and warmup >= 0, got {iterations}, {warmup}")
        count = self._stage(batch)
        shape = self._output_shape()
        for _ in range(warmup):
            self._enqueue(count, shape)
        self._stream.synchronize()
        start, end = self._events  # type: ignore[misc]
        timings = []
        for _ in range(iterations):
            if include_copies:
                self._enqueue(count, shape, start, end)
            else:
                start.record(self._stream)
                if not self._live_context.execute_async_v3(self._stream.handle):
                    raise EdgeTLError(f"{self.path}: TensorRT failed to enqueue inference")
                end.record(self._stream)
            end.synchronize()
            timings.append(float(end.time_since(start)))
        return timings
