"""edgetl: from a folder of labelled images to a fast, small, benchmarked edge model.

    import edgetl

    run = edgetl.build("profile.yaml")          # or edgetl.build({...}), edgetl.build(edgetl.Profile(...))
    print(run.deployed.name, run.deployed.accuracy, run.deployed.latency_ms)
    edgetl.load(run).predict(["photo.jpg"])       # a Run is its run directory; a bundle folder works too

Importing edgetl imports no torch: the names below load on first use, and a build imports torch when
it starts. `edgetl.load` and the predictor it returns never need torch (a device installs numpy,
pillow and onnxruntime only).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edgetl.api import Artifact, Budget, ProfileSource, Progress, Run, TuneResult, build, load_run, tune
    from edgetl.errors import (
        BudgetExceeded,
        DataError,
        EdgeTLError,
        ModelFileError,
        ProfileError,
        UserInputError,
        VerificationError,
    )
    from edgetl.profile import Profile
    from edgetl.runtime import Prediction, Predictor, load
    from edgetl.tuning.progress import TrialEvent

__all__ = [
    "Artifact",
    "Budget",
    "BudgetExceeded",
    "DataError",
    "EdgeTLError",
    "ModelFileError",
    "Prediction",
    "Predictor",
    "Profile",
    "ProfileError",
    "ProfileSource",
    "Progress",
    "Run",
    "TrialEvent",
    "TuneResult",
    "UserInputError",
    "VerificationError",
    "__version__",
    "build",
    "load",
    "load_run",
    "tune",
]

# Public name -> the module (under edgetl) that defines it, imported on first use (PEP 562). Written
# relative, not as "edgetl.api": the stages' code digests follow "edgetl.x" strings (edgetl.source), and
# every module imports this package, while no stage ever touches the public API's lazy names.
_LAZY = {
    **dict.fromkeys(
        ("Artifact", "Budget", "Progress", "ProfileSource", "Run", "TuneResult", "build", "load_run", "tune"), "api"
    ),
    **dict.fromkeys(
        (
            "BudgetExceeded",
            "DataError",
            "EdgeTLError",
            "ModelFileError",
            "ProfileError",
            "UserInputError",
            "VerificationError",
        ),
        "errors",
    ),
    "Profile": "profile",
    "TrialEvent": "tuning.progress",
    **dict.fromkeys(("Prediction", "Predictor", "load"), "runtime"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgetl' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
