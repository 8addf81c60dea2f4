"""TensorRT engine build options: one validated, serializable record shared by the builder, the sidecar and trtexec.

The same record drives `build_engine`, is written into the engine's sidecar (so a runner knows the
optimization profile without deserializing the engine) and into the bundle, and is rendered as the
equivalent `trtexec` command line. Validation happens here, before any TensorRT import, so a bad
option fails in milliseconds with a message naming the `tensorrt.` setting, not minutes into a build.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgetl.backends.tensorrt.versions import TensorRTRelease, since
from edgetl.errors import UserInputError

PRECISIONS = ("fp32", "fp16", "int8")
HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")
# trtexec --builderOptimizationLevel: "integers from 0 to the maximum optimization level, which is currently 5".
MAX_BUILDER_OPTIMIZATION_LEVEL = 5


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class EngineOptions:
    """How to build one TensorRT engine from an ONNX model (TensorRT 10 semantics).

    precision: "fp16" enables fp16 kernels; "int8" expects an explicit Q/DQ model and enables int8
    and fp16 (layers the Q/DQ nodes leave in float may then run in fp16); "fp32" keeps fp32/tf32.
    min/opt/max_batch: the optimization profile of the batch dimension (TensorRT tunes for opt).
    workspace_mb: builder workspace limit; small Jetsons get OOM-killed with TensorRT's default.
    timing_cache: file persisting tactic timings across builds (created if missing).
    dla_core / gpu_fallback: run on a Jetson DLA core; layers it cannot run go to the GPU when allowed.
    hardware_compatibility / version_compatible: engines portable across GPUs / later TensorRT releases.
    builder_optimization_level: 0..5, None keeps TensorRT's default (3).
    strongly_typed: precision from the model's own types (Q/DQ int8, an fp16 model) and no precision
    flags; None: the release's default (on from 10.12, where the flags are deprecated; 11 has no other mode).
    """

    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    workspace_mb: int = 1024
    timing_cache: Path | None = None
    dla_core: int | None = None
    gpu_fallback: bool = True
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    builder_optimization_level: int | None = None
    strongly_typed: bool | None = None

    def __post_init__(self) -> None:
        if self.timing_cache is not None and not isinstance(self.timing_cache, Path):
            if not isinstance(self.timing_cache, str) or not self.timing_cache:
                raise UserInputError(f"tensorrt.timing_cache: expected a file path, got {self.timing_cache!r}")
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))
        self._validate()

    def _validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserInputError(f"tensorrt.precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        for name in ("min_batch", "opt_batch", "max_batch", "workspace_mb"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise UserInputError(f"tensorrt.{name}: expected a positive integer, got {value!r}")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise UserInputError(
                f"tensorrt: need min_batch <= opt_batch <= max_batch, got {self.min_batch}, {self.opt_batch}, "
                f"{self.max_batch}"
            )
        if self.dla_core is not None:
            if not _is_int(self.dla_core) or self.dla_core < 0:
                raise UserInputError(f"tensorrt.dla_core: expected a DLA core index (0, 1, ...), got {self.dla_core!r}")
            if self.precision == "fp32":
                # DLA executes fp16 and int8 only (trtexec --useDLACore silently adds --fp16); say so instead.
                raise UserInputError("tensorrt.dla_core: the DLA runs fp16 and int8 only; set precision fp16 or int8")
        for name in ("gpu_fallback", "version_compatible"):
            if not isinstance(getattr(self, name), bool):
                raise UserInputError(f"tensorrt.{name}: expected true or false, got {getattr(self, name)!r}")
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise UserInputError(
                f"tensorrt.hardware_compatibility: {self.hardware_compatibility!r} is not one of "
                f"{', '.join(HARDWARE_COMPATIBILITY)}"
            )
        if self.strongly_typed is not None and not isinstance(self.strongly_typed, bool):
            raise UserInputError(f"tensorrt.strongly_typed: expected true, false or null, got {self.strongly_typed!r}")
        level = self.builder_optimization_level
        if level is not None and (not _is_int(level) or not 0 <= level <= MAX_BUILDER_OPTIMIZATION_LEVEL):
            raise UserInputError(
                f"tensorrt.builder_optimization_level: expected 0..{MAX_BUILDER_OPTIMIZATION_LEVEL}, got {level!r}"
            )

    def check_release(self, release: TensorRTRelease, where: str) -> None:
        """Refuse, in one line naming the setting, what `release` cannot build (`where`: "target jetson-nano")."""
        needs = f"{where} builds with TensorRT {release}"
        level = self.hardware_compatibility
        if level not in release.hardware_compatibility_levels():
            raise UserInputError(f"tensorrt.hardware_compatibility {level} needs TensorRT >= {since(level)}; {needs}")
        wanted = {
            "version_compatible": self.version_compatible,
            "builder_optimization_level": self.builder_optimization_level is not None,
            "strongly_typed": bool(self.strongly_typed),
        }
        for setting, asked in wanted.items():
            if asked and not release.has(setting):
                raise UserInputError(f"tensorrt.{setting} needs TensorRT >= {since(setting)}; {needs}")
        if self.strongly_typed is False and not release.has_precision_flags:
            raise UserInputError(
                f"tensorrt.strongly_typed: false is not possible: TensorRT {release} builds strongly typed "
                f"networks only ({where})"
            )

    def strongly_typed_for(self, release: TensorRTRelease) -> bool:
        """Whether a build with `release` is strongly typed (the setting, or the release's default)."""
        if self.strongly_typed is None:
            return release.strongly_typed_default
        return self.strongly_typed

    @property
    def profile(self) -> tuple[int, int, int]:
        """(min, opt, max) batch of the optimization profile."""
        return (self.min_batch, self.opt_batch, self.max_batch)

    @property
    def fixed_batch(self) -> int | None:
        """The only batch size the engine accepts when min == max, else None."""
        return self.min_batch if self.min_batch == self.max_batch else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the sidecar's and bundle's `options`); from_dict(to_dict()) == self."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["timing_cache"] = str(self.timing_cache) if self.timing_cache is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineOptions:
        """Options from a profile/bundle/sidecar dict; missing keys take the defaults, unknown keys are errors."""
        if not isinstance(data, dict):
            raise UserInputError(f"tensorrt options: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserInputError(
                f"tensorrt: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**data)
