"""Where a running ``autoscalp up`` is found: ``$AUTOSCALP_HOME/up/up.lock`` and ``up/state.json``.

The lock is an flock on ``up.lock`` (released by the kernel however ``up`` ends) holding the pid of
its owner and that process's start time, so a second ``up`` on the same directory is refused with
the owner's pid, and a lock file left by an ``up`` that was killed is recognised as stale (its pid
is dead, or is now another process). ``state.json`` records the session, the ports, URLs, pids and
states of the children; ``down``, ``status`` and tests read it (``read_state``).
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.stack import procs
from pipeline.errors import AutoscalpError

MARKER = "AUTOSCALP_UP"  # env of every child: "<session>/<component>" (flows/stack/procs.py says why)


class StackRunning(AutoscalpError):
    """Another ``autoscalp up`` holds the project directory."""


@dataclass(frozen=True)
class Holder:
    pid: int
    start: int | None  # /proc start time of that pid, to tell it from a reused pid

    def alive(self) -> bool:
        return procs.alive(self.pid, self.start)


def up_dir(home: Path) -> Path:
    return home / "up"


def read_holder(home: Path) -> Holder | None:
    try:
        fields = (up_dir(home) / "up.lock").read_text().split()
        return Holder(int(fields[0]), int(fields[1]) if len(fields) > 1 and fields[1] != "-" else None)
    except (OSError, ValueError, IndexError):
        return None


class StackLock:
    """One ``up`` per project directory."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = up_dir(home) / "up.lock"
        self._fd: int | None = None

    def acquire(self) -> Holder | None:
        """Take the lock or raise ``StackRunning``; returns the stale holder it replaced, if any."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.home)
            who = f"pid {holder.pid}" if holder else "another process"
            raise StackRunning(f"autoscalp up already runs on {self.home} ({who}); `autoscalp down` stops it, "
                               "or use another --home / AUTOSCALP_HOME") from None
        previous = read_holder(self.home)
        me = os.getpid()
        os.ftruncate(fd, 0)
        os.write(fd, f"{me} {procs.start_time(me) or '-'}\n".encode())
        self._fd = fd
        return previous if previous is not None and previous.pid != me and not previous.alive() else None

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def write_state(home: Path, state: dict[str, Any]) -> None:
    """Atomically: a reader never sees half a file."""
    path = up_dir(home) / "state.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    os.replace(tmp, path)


def read_state(home: Path) -> dict[str, Any] | None:
    """The last state ``up`` wrote on ``home`` (``running`` False once it stopped), or None."""
    try:
        return json.loads((up_dir(home) / "state.json").read_text())
    except (OSError, ValueError):
        return None


def leftovers(session: str, component: str = "") -> set[int]:
    """Processes a session's children (or one child) started that still run."""
    return procs.with_marker(MARKER, f"{session}/{component}")
