"""The TensorRT releases edgetl builds for, and every behaviour that differs between them, in one place.

Each target names the release it ships (JetPack 4.6 -> 8.2, JetPack 5 -> 8.5, JetPack 6 -> 10.3; on
x86 the installed one), and the trtexec flags, the build settings a profile may ask for, the Python
API path, the precision mode and the ONNX opset the export writes all derive from it. Read from
NVIDIA's own sources at each release tag (github.com/NVIDIA/TensorRT: samples/common/sampleOptions.cpp
for trtexec, python/src/infer/pyCore.cpp and include/NvInfer.h for the API; onnx/onnx-tensorrt
docs/operators.md for opsets), tags 8.2.1, 8.4.1, 8.5.2, v8.6.1, v10.0.0, v10.3.0, v10.8.0,
v10.9.0, v10.12.0, v10.13.0, v11.0. trtexec exits on an unknown option at every release, so a flag
from a later release is a hard failure on the device, not a warning.

This module imports nothing: bundles render trtexec commands on machines without TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgetl.errors import UserInputError

# First release with each optional build setting (trtexec flag and builder API alike).
SETTING_SINCE: dict[str, tuple[int, int]] = {
    "ampere_plus": (8, 6),  # --hardwareCompatibilityLevel=ampere+, HardwareCompatibilityLevel.AMPERE_PLUS
    "same_compute_capability": (10, 9),  # ...=sameComputeCapability, SAME_COMPUTE_CAPABILITY
    "version_compatible": (8, 6),  # --versionCompatible, BuilderFlag.VERSION_COMPATIBLE
    "builder_optimization_level": (8, 6),  # --builderOptimizationLevel, IBuilderConfig.builder_optimization_level
    "strongly_typed": (10, 0),  # --stronglyTyped, NetworkDefinitionCreationFlag.STRONGLY_TYPED
}


def since(setting: str) -> str:
    """ "8.6": the first release that has `setting` (a key of SETTING_SINCE)."""
    return ".".join(map(str, SETTING_SINCE[setting]))


@dataclass(frozen=True, order=True)
class TensorRTRelease:
    """One TensorRT release line (major.minor); what it accepts is computed, not listed twice."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str, what: str = "TensorRT version") -> TensorRTRelease:
        """ "10.3.0.26" / "8.2" -> the release; UserInputError for one edgetl does not support."""
        parts = str(text).strip().split(".")
        try:
            release = cls(int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
        except ValueError:
            raise UserInputError(f"{what}: {text!r} is not a TensorRT version such as 10.3") from None
        if not release.supported:
            raise UserInputError(
                f"{what}: TensorRT {release} is not supported (edgetl builds for 8.2, 8.4-8.6, 10.x and 11.x)"
            )
        return release

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def supported(self) -> bool:
        # 9.x was a limited (LLM) release line; 8.0/8.1 predate build_serialized_network's ONNX flows here.
        return (self.major == 8 and self.minor >= 2) or self.major in (10, 11)

    def at_least(self, major: int, minor: int = 0) -> bool:
        return (self.major, self.minor) >= (major, minor)

    # --- trtexec ----------------------------------------------------------------------------------
    def workspace_flag(self, workspace_mb: int) -> str:
        """--workspace=N (MiB) until 8.4 added --memPoolSize (and 10.0 removed --workspace).

        A bare number is MiB at every release that has --memPoolSize; unit suffixes are parsed only
        from 10.1 (8.4-10.0 read `256M` with std::stod), so none is written.
        """
        if self.at_least(8, 4):
            return f"--memPoolSize=workspace:{workspace_mb}"
        return f"--workspace={workspace_mb}"

    @property
    def build_only_flag(self) -> str:
        """--buildOnly until 8.6 renamed it --skipInference (10.0 removed --buildOnly)."""
        return "--skipInference" if self.at_least(8, 6) else "--buildOnly"

    # --- precision --------------------------------------------------------------------------------
    def has(self, setting: str) -> bool:
        """Whether this release has an optional build setting (a key of SETTING_SINCE)."""
        return self.at_least(*SETTING_SINCE[setting])

    @property
    def has_strong_typing(self) -> bool:
        """NetworkDefinitionCreationFlag.STRONGLY_TYPED / trtexec --stronglyTyped (10.0; always on in 11)."""
        return self.has("strongly_typed")

    @property
    def strongly_typed_default(self) -> bool:
        """10.12 deprecated BuilderFlag.FP16/INT8 ("superseded by strong typing"); 11 removed them."""
        return self.at_least(10, 12)

    @property
    def has_precision_flags(self) -> bool:
        """Weak typing: BuilderFlag.FP16/INT8 and trtexec --fp16/--int8 exist (removed in 11.0)."""
        return self.major < 11

    # --- build settings ---------------------------------------------------------------------------
    def hardware_compatibility_levels(self) -> tuple[str, ...]:
        """Values of tensorrt.hardware_compatibility this release builds (8.6: ampere+, 10.9: same CC)."""
        return ("none", *(level for level in ("ampere_plus", "same_compute_capability") if self.has(level)))

    @property
    def has_version_compatible(self) -> bool:
        return self.has("version_compatible")

    @property
    def has_builder_optimization_level(self) -> bool:
        return self.has("builder_optimization_level")

    # --- Python API -------------------------------------------------------------------------------
    @property
    def python_api(self) -> bool:
        """edgetl's builder and runner need set_memory_pool_limit (8.4) and the tensor-name API with
        execute_async_v3 (8.5); on 8.2 only the bundle's trtexec script builds the engine."""
        return self.at_least(8, 5)

    @property
    def needs_explicit_batch_flag(self) -> bool:
        """Before 10.0 an ONNX network must be created with EXPLICIT_BATCH; 10.0 ignores it, 11 removed it."""
        return self.major < 10

    # --- ONNX -------------------------------------------------------------------------------------
    @property
    def max_opset(self) -> int:
        """Newest ONNX opset its parser reads (onnx-tensorrt docs/operators.md at each GA branch).

        8.2: 13; 8.4-8.6: 17; 10.0/10.1: 20 (10.2-10.x assumed the same, not read); 11: 25.
        """
        if self.major == 8:
            return 13 if self.minor < 4 else 17
        return 20 if self.major == 10 else 25


def installed_release() -> TensorRTRelease | None:
    """The TensorRT release pip installed here (read from package metadata: importing tensorrt loads the GPU stack)."""
    from importlib import metadata

    for distribution in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"):
        try:
            return TensorRTRelease.parse(metadata.version(distribution), f"installed {distribution}")
        except (metadata.PackageNotFoundError, UserInputError):
            continue
    return None


def release_of(version: str) -> TensorRTRelease:
    """The release of an installed TensorRT (`trt.__version__`)."""
    return TensorRTRelease.parse(version, "installed TensorRT")
