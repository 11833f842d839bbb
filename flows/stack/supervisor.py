"""Start, watch and stop the children of ``autoscalp up``.

Each child runs in its own session (``start_new_session``) with its output in
``$AUTOSCALP_HOME/logs/<name>.log``. Start: in stages (the servers, then what needs them), each stage
healthy before the next, or ``up`` fails naming the child and its log. Watch: a child that exits, or
that never becomes healthy after a restart, is started again after a back-off
(``RestartConfig.delay_s``); after ``max_fast_crashes`` crashes in a row, each within
``fast_crash_s`` of its start, it is given up (the others keep running). Stop: in reverse order, the
child's stop signal to its process group, SIGKILL after ``stop_grace_s`` to whatever of it is left,
including grandchildren that left the group (found by their environment marker, see procs.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.stack import procs
from flows.stack.components import Component, now_iso
from flows.stack.config import RestartConfig, UpConfig
from flows.stack.state import leftovers
from pipeline.errors import AutoscalpError

LOG_TAIL_LINES = 15


class StackError(AutoscalpError):
    """The stack could not be started."""


def next_restart(restart: RestartConfig, fast_crashes: int, ran_s: float) -> tuple[int, float | None]:
    """After a crash: (fast crashes in a row now, seconds to wait before the restart or None to give up).
    A crash after a run longer than ``fast_crash_s`` ends the streak and is restarted at once-ish."""
    fast_crashes = fast_crashes + 1 if ran_s < restart.fast_crash_s else 0
    if fast_crashes >= restart.max_fast_crashes:
        return fast_crashes, None
    return fast_crashes, restart.delay_s(max(fast_crashes, 1))


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Child:
    component: Component
    log: Path
    proc: subprocess.Popen | None = None
    state: str = "pending"  # starting | healthy | unhealthy | restarting | failed | stopped
    started_wall: float = 0.0
    started_mono: float = 0.0
    restarts: int = 0
    fast_crashes: int = 0
    restart_at: float | None = None
    last_exit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.component.name

    def to_json(self) -> dict[str, Any]:
        c = self.component
        return {"pid": self.proc.pid if self.proc else None, "state": self.state, "url": c.url, "port": c.port,
                "log": str(self.log), "restarts": self.restarts, "last_exit": self.last_exit,
                "started_at": self.extra.get("started_at")}  # fmt: skip


class Supervisor:
    def __init__(self, components: list[Component], config: UpConfig, logs: Path, session: str,
                 say: Callable[[str], None], on_change: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self.config = config
        self.session = session
        self.say = say
        self.on_change = on_change
        logs.mkdir(parents=True, exist_ok=True)
        self.children = {c.name: Child(c, logs / f"{c.name}.log") for c in components}
        self.stopping = threading.Event()

    # ---- start ------------------------------------------------------------------------------

    def stages(self) -> list[list[Child]]:
        """Children whose ``after`` are all in earlier stages, stage by stage."""
        placed: set[str] = set()
        stages, todo = [], list(self.children.values())
        while todo:
            stage = [c for c in todo if set(c.component.after) <= placed]
            if not stage:
                raise StackError(f"up: components wait on each other: {[c.name for c in todo]}")
            stages.append(stage)
            placed |= {c.name for c in stage}
            todo = [c for c in todo if c not in stage]
        return stages

    def start_all(self) -> None:
        """Every stage started and healthy, or StackError naming the child and the end of its log."""
        for stage in self.stages():
            for child in stage:
                self._spawn(child)
            self.on_change()
            deadline = time.monotonic() + self.config.health_timeout_s
            waiting = list(stage)
            while waiting:
                if self.stopping.is_set():
                    return
                for child in list(waiting):
                    if child.proc.poll() is not None:
                        self.say(log_tail(child.log))
                        raise StackError(f"{child.name} exited with code {child.proc.returncode} while starting; "
                                         f"see {child.log}")
                    if child.component.healthy(child.started_wall):
                        child.state = "healthy"
                        waiting.remove(child)
                        self.say(f"{child.name} is up" + (f": {child.component.url}" if child.component.url else ""))
                        self.on_change()
                if waiting and time.monotonic() > deadline:
                    names = ", ".join(c.name for c in waiting)
                    self.say(log_tail(waiting[0].log))
                    raise StackError(f"{names} not healthy within {self.config.health_timeout_s:g} s; see "
                                     f"{waiting[0].log}")
                if waiting:
                    self.stopping.wait(0.5)

    def _spawn(self, child: Child) -> None:
        c = child.component
        with child.log.open("a") as log:
            log.write(f"==== autoscalp up: starting {c.name} at {now_iso()}: {' '.join(c.argv)}\n")
            log.flush()
            child.proc = subprocess.Popen(c.argv, env=c.env, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        child.state, child.restart_at = "starting", None
        child.started_wall, child.started_mono = time.time(), time.monotonic()
        child.extra["started_at"] = now_iso()

    # ---- watch ------------------------------------------------------------------------------

    def watch(self) -> None:
        """Until ``stopping`` is set: restart crashed children, follow health."""
        while not self.stopping.wait(self.config.check_interval_s):
            for child in self.children.values():
                if self.stopping.is_set():
                    return
                self.check(child)

    def check(self, child: Child) -> None:
        before = child.state
        now = time.monotonic()
        if child.state in ("failed", "stopped", "pending"):
            return
        if child.state == "restarting":
            if now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
                self.say(f"{child.name} restarted (restart {child.restarts})")
        elif child.proc.poll() is not None:
            self._crashed(child, f"exited with code {child.proc.returncode}")
        elif child.component.healthy(child.started_wall):
            child.state = "healthy"
        elif child.state == "starting" and now - child.started_mono > self.config.health_timeout_s:
            self._stop_child(child)
            self._crashed(child, f"not healthy within {self.config.health_timeout_s:g} s")
        elif child.state != "starting":
            child.state = "unhealthy"
        if child.state != before:
            self.on_change()

    def _crashed(self, child: Child, why: str) -> None:
        ran_s = time.monotonic() - child.started_mono
        child.last_exit = child.proc.returncode
        # helpers it left behind (a server's workers) would hold its port
        procs.stop(leftovers(self.session, child.name), self.config.stop_grace_s)
        child.fast_crashes, delay = next_restart(self.config.restart, child.fast_crashes, ran_s)
        if delay is None:
            child.state = "failed"
            self.say(f"{child.name} {why} after {ran_s:.0f} s: {child.fast_crashes} crashes in a row, each within "
                     f"{self.config.restart.fast_crash_s:g} s of its start; giving up on it (the rest keeps "
                     f"running). See {child.log}:\n{log_tail(child.log)}")
            return
        child.state, child.restart_at = "restarting", time.monotonic() + delay
        self.say(f"{child.name} {why} after {ran_s:.0f} s; restarting in {delay:g} s (see {child.log})")

    # ---- stop -------------------------------------------------------------------------------

    def stop_all(self) -> list[int]:
        """Stop every child, last stage first; returns the pids that needed SIGKILL."""
        self.stopping.set()
        killed: list[int] = []
        for stage in reversed(self.stages()):
            threads = [threading.Thread(target=lambda c=c: killed.extend(self._stop_child(c))) for c in stage]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        # anything of this session still running (a flow run whose runner died first)
        killed += sorted(procs.stop(leftovers(self.session), self.config.stop_grace_s))
        self.on_change()
        return killed

    def _stop_child(self, child: Child) -> set[int]:
        proc = child.proc
        if proc is None:
            child.state = "stopped"
            return set()
        pids = {proc.pid} | procs.descendants(proc.pid) | leftovers(self.session, child.name)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, child.component.stop_signal)
            except (ProcessLookupError, PermissionError):
                pass
        left = procs.wait_gone(pids, self.config.stop_grace_s)
        # grandchildren started after the first look
        left |= leftovers(self.session, child.name)
        procs.signal_all(left, signal.SIGKILL)
        procs.wait_gone(left, 5.0)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if child.state != "failed":
            child.state = "stopped"
        return left
