"""One error hierarchy, so the CLI can turn any expected failure into one clear line.

Exit codes are part of the interface (CI jobs branch on them):

* 2 - bad input: profile, paths, images, model files, arguments (`UserInputError` and subclasses)
* 3 - a budget in the profile was violated (the report is still written)
* 4 - a verification step failed (e.g. ONNX parity against PyTorch)
* 5 - another build holds the run directory
* 6 - `edgetl bench --baseline` found a regression
* 1 - anything unexpected (a bug): the CLI prints a traceback with --debug
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgeTLError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UserInputError(EdgeTLError):
    """Something the user gave us is wrong; fixing the input fixes the build."""

    exit_code = 2


class ProfileError(UserInputError):
    """A profile file is missing, unparsable, or fails validation."""


class DataError(UserInputError):
    """The image folder cannot be trained or evaluated on."""


class ModelFileError(UserInputError):
    """A weights, checkpoint or ONNX file is missing or corrupt."""


class BackboneError(UserInputError):
    """Unknown backbone, or its pretrained weights are not available."""


class EngineMismatchError(ModelFileError):
    """A TensorRT engine was built for another TensorRT version or GPU; it must be rebuilt on this machine."""


class DependencyError(UserInputError):
    """An optional dependency needed for this command is not installed."""


class DownloadError(UserInputError):
    """A dataset could not be downloaded or failed verification."""


class BudgetExceeded(EdgeTLError):
    """The build finished but violated a budget; the report has the details."""

    exit_code = 3


class VerificationError(EdgeTLError):
    """An artefact failed a correctness check (parity, quantized model load)."""

    exit_code = 4


class RunLockedError(EdgeTLError):
    """Another build is writing into the same run directory."""

    exit_code = 5


class RegressionFound(EdgeTLError):
    """`edgetl bench --baseline` measured a regression beyond the tolerances."""

    exit_code = 6


def unknown_name_message(what: str, name: str, known: Iterable[str], plural: str | None = None) -> str:
    """ "unknown target 'x86'; did you mean 'x86-cpu'? known targets: ..." for every registry's lookups."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    suggestion = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}{suggestion} known {plural or what + 's'}: {', '.join(known)}"


def first_line(error: BaseException) -> str:
    """The first line of an error's message (the one-line user errors quote), or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
