"""The JSON sidecar next to every engine: what it was built with and for, checked before deserializing it.

A serialized TensorRT engine only runs on the TensorRT release and GPU it was built for (unless it
was built version- or hardware-compatible), and deserializing a foreign engine fails with an opaque
TensorRT message, or worse, loads on a similar GPU and runs slowly. The engine file itself stays a
plain TensorRT plan (so `trtexec --loadEngine` and other tools read it); `<engine>.json` records the
TensorRT version, GPU, compute capability, build options, the ONNX it came from and its I/O, so a
mismatch is reported as one line that says how to fix it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgetl.backends.tensorrt.options import EngineOptions
from edgetl.errors import EngineMismatchError, ModelFileError
from edgetl.files import read_json, write_json_atomic

__all__ = [
    "SIDECAR_SCHEMA",
    "EngineSidecar",
    "check_compatible",
    "check_platform",
    "this_platform",
    "read_sidecar",
    "rebuild_command",
    "sidecar_path",
    "utc_now",
    "write_sidecar",
]

SIDECAR_SCHEMA = "edgetl.engine/1"
AMPERE = (8, 0)


def sidecar_path(engine_path: str | Path) -> Path:
    """`model.engine` -> `model.engine.json` (the sidecar travels with the engine when both are copied)."""
    engine = Path(engine_path)
    return engine.with_name(engine.name + ".json")


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class EngineSidecar:
    """What an engine was built with (TensorRT, GPU, options) and from (ONNX hash, I/O names and shape)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    options: dict[str, Any]  # EngineOptions.to_dict()
    onnx_sha256: str
    input_name: str
    input_shape: list[int]  # NCHW with -1 for the batch dimension; the batch range is in options
    output_name: str
    created: str = field(default_factory=utc_now)  # UTC, ISO 8601
    engine_sha256: str | None = None  # ties the sidecar to its engine file (a stale pair is detected)
    # CPU architecture of the build machine ("x86_64", "aarch64") and, on a Jetson, its model; None in old sidecars.
    platform: str | None = None
    device_model: str | None = None
    schema: str = SIDECAR_SCHEMA

    @property
    def engine_options(self) -> EngineOptions:
        return EngineOptions.from_dict(self.options)

    @property
    def chw(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input_shape[1:])

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["options"] = dict(self.options)
        data["input_shape"] = [int(d) for d in self.input_shape]
        return {"schema": data.pop("schema"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = "engine sidecar") -> EngineSidecar:
        """Parse and check a sidecar dict; ModelFileError naming `source` when it is not one."""
        if not isinstance(data, dict) or data.get("schema") != SIDECAR_SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise ModelFileError(f"{source}: schema {found!r}, expected {SIDECAR_SCHEMA!r}; rebuild the engine")
        names = {f.name for f in fields(cls)}
        required = (
            *("tensorrt_version", "gpu_name", "compute_capability", "options", "onnx_sha256"),
            *("input_name", "input_shape", "output_name"),
        )
        missing = [name for name in required if name not in data]
        if missing:
            raise ModelFileError(f"{source}: missing {', '.join(missing)}; rebuild the engine")
        shape = data["input_shape"]
        if not isinstance(shape, list) or len(shape) < 2 or not all(isinstance(d, int) for d in shape):
            raise ModelFileError(f"{source}: input_shape {shape!r} is not a list of integers; rebuild the engine")
        if not isinstance(data["options"], dict):
            raise ModelFileError(f"{source}: options is not a mapping; rebuild the engine")
        return cls(**{key: value for key, value in data.items() if key in names})


def write_sidecar(engine_path: str | Path, sidecar: EngineSidecar) -> Path:
    """Write `<engine>.json` atomically; returns its path."""
    path = sidecar_path(engine_path)
    write_json_atomic(path, sidecar.to_dict())
    return path


def read_sidecar(engine_path: str | Path) -> EngineSidecar:
    """The sidecar of `engine_path`; ModelFileError (with the fix) when missing or unreadable."""
    engine = Path(engine_path)
    path = sidecar_path(engine)
    if not path.is_file():
        raise ModelFileError(
            f"{engine}: its sidecar {path.name} is missing (it records the TensorRT version, GPU and batch "
            f"profile); copy it along with the engine or rebuild with `{rebuild_command(engine)}`"
        )
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path}: unreadable engine sidecar ({error}); rebuild the engine") from None
    return EngineSidecar.from_dict(data, source=path)


def rebuild_command(engine_path: str | Path | None) -> str:
    """`edgetl engine build <bundle dir>` when the engine sits in a bundle, else the generic form."""
    if engine_path is not None:
        folder = Path(engine_path).parent
        if (folder / "bundle.json").is_file():
            return f"edgetl engine build {folder}"
    return "edgetl engine build BUNDLE"


def this_platform() -> dict[str, str | None]:
    """CPU architecture and, on a Jetson (or other device-tree board), its model, e.g. "NVIDIA Jetson AGX Orin"."""
    import platform

    model = None
    tree = Path("/proc/device-tree/model")
    try:
        if tree.is_file():
            model = tree.read_bytes().rstrip(b"\0").decode(errors="replace").strip() or None
    except OSError:
        model = None
    return {"platform": platform.machine() or None, "device_model": model}


_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def check_platform(sidecar: EngineSidecar, here: str | None, *, engine_path: str | Path | None = None) -> None:
    """Refuse, before TensorRT is even imported, an engine built on another CPU architecture (x86 vs a Jetson)."""
    if not sidecar.platform or not here:
        return
    built, current = (_ARCH_ALIASES.get(p.lower(), p.lower()) for p in (sidecar.platform, here))
    if built != current:
        where = f" ({sidecar.device_model})" if sidecar.device_model else ""
        name = engine_path if engine_path is not None else "(unnamed)"
        raise EngineMismatchError(
            f"engine {name} was built on {sidecar.platform}{where}; this machine is {here}, and an engine runs only "
            f"where it was built: rebuild it on this machine with `{rebuild_command(engine_path)}`"
        )


def _version(text: str) -> tuple[int, int, int]:
    """Version text such as 10.3.0.26, 10.3.0.post1 or 10.3 -> (10, 3, 0); the build number is not compared."""
    match = re.match(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
    if not match:
        raise ModelFileError(f"unparsable TensorRT version {text!r}")
    return tuple(int(part or 0) for part in match.groups())  # type: ignore[return-value]


def _capability(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", str(text))
    if not match:
        raise ModelFileError(f"unparsable compute capability {text!r} (expected e.g. '8.7')")
    return int(match.group(1)), int(match.group(2))


def _same_gpu(a: str, b: str) -> bool:
    return " ".join(a.split()).lower() == " ".join(b.split()).lower()


def check_compatible(
    sidecar: EngineSidecar,
    tensorrt_version: str,
    compute_capability: str,
    gpu_name: str,
    *,
    engine_path: str | Path | None = None,
) -> None:
    """Raise EngineMismatchError unless this machine can run the engine `sidecar` describes.

    Rules (TensorRT 10): a plain engine needs the same TensorRT release (major.minor.patch) and the
    same GPU model; `version_compatible` engines load on any later release of the same major version;
    hardware compatibility `ampere_plus` runs on any GPU of compute capability >= 8.0 and
    `same_compute_capability` on any GPU with the same compute capability.
    """
    options = sidecar.options
    version_compatible = bool(options.get("version_compatible", False))
    hardware = options.get("hardware_compatibility", "none") or "none"
    built_version, here_version = _version(sidecar.tensorrt_version), _version(tensorrt_version)
    built_cc, here_cc = _capability(sidecar.compute_capability), _capability(compute_capability)

    reasons: list[str] = []
    if version_compatible:
        if here_version[0] != built_version[0] or here_version < built_version:
            reasons.append(
                f"a version-compatible engine loads on TensorRT {built_version[0]}.x from {sidecar.tensorrt_version} on"
            )
    elif here_version != built_version:
        reasons.append("an engine loads only on the TensorRT release it was built with")
    if hardware == "ampere_plus":
        if here_cc < AMPERE:
            reasons.append("an ampere_plus engine needs compute capability 8.0 or newer")
    elif hardware == "same_compute_capability":
        if here_cc != built_cc:
            reasons.append(f"a same_compute_capability engine needs compute capability {sidecar.compute_capability}")
    elif here_cc != built_cc or not _same_gpu(gpu_name, sidecar.gpu_name):
        reasons.append("an engine runs only on the GPU model it was built for")
    if not reasons:
        return

    qualities = []
    if version_compatible:
        qualities.append("version-compatible")
    if hardware != "none":
        qualities.append(f"hardware compatibility {hardware}")
    built_as = f" ({', '.join(qualities)})" if qualities else ""
    name = engine_path if engine_path is not None else "(unnamed)"
    raise EngineMismatchError(
        f"engine {name} was built with TensorRT {sidecar.tensorrt_version} for compute capability "
        f"{sidecar.compute_capability} ({sidecar.gpu_name}){built_as}; this machine has TensorRT "
        f"{tensorrt_version} and compute capability {compute_capability} ({gpu_name}), and "
        f"{'; '.join(reasons)}: rebuild it on this machine with `{rebuild_command(engine_path)}`"
    )
