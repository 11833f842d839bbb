"""`autoscalp up`'s parts with real processes and sockets: the lock (refusal, stale), the back-off
schedule, port selection, and the supervisor restarting, giving up on and stopping children
(grandchildren that left the process group included)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flows.config import ProductConfig
from flows.stack import procs
from flows.stack.components import Component, resolve_ports
from flows.stack.config import RestartConfig, UpConfig
from flows.stack.state import MARKER, StackLock, StackRunning, leftovers, read_holder
from flows.stack.supervisor import Supervisor, next_restart
from pipeline.errors import AutoscalpError


def test_a_second_up_on_the_same_home_is_refused_with_the_holders_pid(tmp_path):
    lock = StackLock(tmp_path)
    assert lock.acquire() is None  # (the command's refusal: tests/integration/test_up.py)
    try:
        with pytest.raises(StackRunning, match=rf"already runs on {tmp_path} \(pid {os.getpid()}\)"):
            StackLock(tmp_path).acquire()
    finally:
        lock.release()
    again = StackLock(tmp_path)
    assert again.acquire() is None  # released: the next up takes it
    again.release()


def test_a_lock_left_by_a_dead_or_replaced_process_is_stale(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "up.lock").write_text(f"{gone.pid} 12345\n")
    lock = StackLock(tmp_path)
    stale = lock.acquire()
    assert stale is not None and stale.pid == gone.pid
    assert read_holder(tmp_path).pid == os.getpid()
    lock.release()
    # a living pid whose start time differs is another process now (the pid was reused)
    parent = os.getppid()
    (tmp_path / "up" / "up.lock").write_text(f"{parent} {procs.start_time(parent) + 1}\n")
    lock = StackLock(tmp_path)
    assert lock.acquire().pid == parent
    lock.release()


def test_back_off_doubles_to_its_cap_and_gives_up_after_max_fast_crashes():
    restart = RestartConfig(initial_s=1.0, factor=2.0, max_s=5.0, fast_crash_s=60.0, max_fast_crashes=5)
    assert [restart.delay_s(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    fast, delays = 0, []
    for _ in range(5):
        fast, delay = next_restart(restart, fast, ran_s=3.0)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 5.0, None] and fast == 5
    # a crash after a long run ends the streak: restarted after the first delay
    assert next_restart(restart, 4, ran_s=600.0) == (0, 1.0)


def test_free_ports_are_distinct_and_a_taken_port_is_named():
    ports = resolve_ports({"prefect": 0, "mlflow": 0, "serve": 0})
    assert len(set(ports.values())) == 3 and all(p > 0 for p in ports.values())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(AutoscalpError, match=rf"port {taken} for mlflow is in use.*up.mlflow_port"):
            resolve_ports({"prefect": 0, "mlflow": taken})


def test_up_config_accepts_auto_and_refuses_a_schedule_without_prefect():
    up = UpConfig.model_validate({"prefect_port": "auto", "mlflow_port": "AUTO", "serve_port": 0})
    assert (up.prefect_port, up.mlflow_port, up.serve_port) == (0, 0, 0)
    with pytest.raises(ValueError, match="schedule serves its deployments on the Prefect server"):
        UpConfig(components=("mlflow", "schedule"))
    assert ProductConfig().up == UpConfig()


def _child(name: str, code: str, session: str) -> Component:
    return Component(name, [sys.executable, "-c", code], {**os.environ, MARKER: f"{session}/{name}"},
                     healthy=lambda _started: True)  # fmt: skip


def _supervisor(tmp_path: Path, components: list[Component], session: str, lines: list[str], **up) -> Supervisor:
    config = UpConfig(check_interval_s=0.05, stop_grace_s=1.0, **up)
    return Supervisor(components, config, tmp_path / "logs", session, lines.append)


def test_a_child_crashing_fast_is_restarted_with_back_off_then_given_up(tmp_path):
    session, lines = f"t{os.getpid()}crash", []
    crashing = _child("serve", "import time; time.sleep(0.3); raise SystemExit(3)", session)
    restart = {"initial_s": 0.1, "factor": 2.0, "max_s": 0.2, "fast_crash_s": 30.0, "max_fast_crashes": 3}
    supervisor = _supervisor(tmp_path, [crashing], session, lines, restart=restart)
    supervisor.start_all()
    watcher = threading.Thread(target=supervisor.watch)
    watcher.start()
    deadline = time.monotonic() + 30
    child = supervisor.children["serve"]
    while child.state != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.stop_all()
    watcher.join(5)
    assert child.state == "failed" and child.restarts == 2 and child.last_exit == 3
    assert [line.split(";")[1].strip() for line in lines if "restarting in" in line] == [
        "restarting in 0.1 s (see " + str(child.log) + ")", "restarting in 0.2 s (see " + str(child.log) + ")"]
    assert "3 crashes in a row" in lines[-1] and "giving up" in lines[-1]
    assert (tmp_path / "logs" / "serve.log").read_text().count("==== autoscalp up: starting serve") == 3


def test_stop_reaches_grandchildren_that_left_the_group_and_children_ignoring_sigterm(tmp_path):
    session = f"t{os.getpid()}stop"
    # a child that ignores SIGTERM and starts a grandchild in a session of its own (as Prefect's
    # runner does with flow runs), which would survive a signal to the child's group
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); "
            "time.sleep(120)")
    stubborn = _child("schedule", code, session)
    polite = _child("prefect", "import time; time.sleep(120)", session)
    supervisor = _supervisor(tmp_path, [polite, stubborn], session, [])
    supervisor.start_all()
    deadline = time.monotonic() + 20
    while len(leftovers(session)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = leftovers(session)
    assert len(pids) == 3
    started = time.monotonic()
    killed = supervisor.stop_all()
    assert leftovers(session) == set() and not any(procs.alive(p) for p in pids)
    assert supervisor.children["schedule"].proc.pid in killed  # SIGKILL after the grace
    assert supervisor.children["prefect"].proc.pid not in killed  # SIGTERM was enough
    assert time.monotonic() - started < 10
    assert {c.state for c in supervisor.children.values()} == {"stopped"}
