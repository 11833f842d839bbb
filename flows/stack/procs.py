"""Processes on Linux, read from /proc: is a pid alive (and the same process), who descends from it,
who carries an environment marker, and stopping a set of them (SIGTERM, grace, SIGKILL).

Children are started in their own session, so a signal to the group reaches their helpers; but
some grandchildren start sessions of their own (Prefect runs each flow run with
``start_new_session``, MLflow its job runners), so every child of ``up`` also carries a marker in
its environment, which those grandchildren inherit: the marker finds them even after their parent
died and they were re-parented to init.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (tells a pid from its reuse), None if gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else int(fields[19])


def alive(pid: int, started: int | None = None) -> bool:
    """The pid runs (not a zombie), and is the process that started at ``started`` when given."""
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def _parent(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` in the parent tree (not ``pid`` itself)."""
    children: dict[int, list[int]] = {}
    for p in _pids():
        parent = _parent(p)
        if parent is not None:
            children.setdefault(parent, []).append(p)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def with_marker(key: str, prefix: str) -> set[int]:
    """Living processes of this user whose environment holds ``key`` with a value starting with
    ``prefix`` (other users' environments are unreadable)."""
    needle = f"{key}={prefix}".encode()
    found = set()
    for p in _pids():
        try:
            environ = (PROC / str(p) / "environ").read_bytes()
        except OSError:
            continue
        if any(entry.startswith(needle) for entry in environ.split(b"\0")) and alive(p):
            found.add(p)
    return found


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_gone(pids: Iterable[int], timeout_s: float) -> set[int]:
    """Wait until none of ``pids`` is alive; returns those still alive at the deadline."""
    left, deadline = set(pids), time.monotonic() + timeout_s
    while True:
        left = {p for p in left if alive(p)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def stop(pids: Iterable[int], grace_s: float, sig: int = signal.SIGTERM) -> set[int]:
    """``sig`` to each, SIGKILL to those still alive after ``grace_s``; returns the ones it had to kill."""
    pids = {p for p in pids if alive(p)}
    signal_all(pids, sig)
    left = wait_gone(pids, grace_s)
    signal_all(left, signal.SIGKILL)
    wait_gone(left, 5.0)
    return left
