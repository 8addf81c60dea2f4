"""A lock file so two builds never write into the same run directory at once."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from edgetl import layout
from edgetl.errors import RunLockedError

_WAIT = "wait for that build to finish or choose another output_dir; a dead process's lock on this host is taken over"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive lock on a run directory; a lock left by a dead process on this host is taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / layout.STATE_DIR / "lock"
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._stale():
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunLockedError(self._held_message(), hint=_WAIT) from None
            with os.fdopen(fd, "w") as handle:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, handle)
            self.held = True
            return
        raise RunLockedError(self._held_message(), hint=_WAIT)

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self) -> bool:
        owner = self._owner()
        if not owner:
            # Unreadable: being written right now, or garbage. Garbage older than a minute is stale.
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except OSError:
                return True
        return owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", -1)))

    def _held_message(self) -> str:
        owner = self._owner()
        who = f"process {owner.get('pid')} on {owner.get('host')}" if owner else "another build"
        return f"{self.path.parent.parent}: {who} is building into this run directory (lock {self.path})"

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
