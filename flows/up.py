"""``autoscalp up`` and ``autoscalp down``: the local stack (Prefect server, MLflow server, the
scheduled deployments, the paper daemon) as supervised processes on 127.0.0.1 (flows/stack/)."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError
from rich.table import Table

from flows._cli_common import ConfigOption, _config, stdout, user_errors
from flows.config import ProductConfig
from flows.stack import procs
from flows.stack.components import now_iso, plan, resolve_ports, wanted_ports
from flows.stack.state import Holder, StackLock, leftovers, read_holder, read_state, write_state
from flows.stack.supervisor import Supervisor
from pipeline.home import HOME_ENV, autoscalp_home

HomeOption = Annotated[
    Optional[Path], typer.Option("--home", help="Project directory (default: $AUTOSCALP_HOME, else ./.autoscalp).")
]


def _port(name: str) -> Any:
    return typer.Option(f"--{name}-port", help=f"{name} port on 127.0.0.1, or auto (default: config up.{name}_port).")


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def up_command(
    config: ConfigOption = None,
    home: HomeOption = None,
    prefect_port: Annotated[Optional[str], _port("prefect")] = None,
    mlflow_port: Annotated[Optional[str], _port("mlflow")] = None,
    serve_port: Annotated[Optional[str], _port("serve")] = None,
) -> None:
    """Start the local stack and supervise it until Ctrl-C or `autoscalp down`: the Prefect server (UI),
    the MLflow tracking server (UI), the ingest and retrain deployments on their schedules, and the
    serving daemon. A crashed child is restarted with back-off; logs in $AUTOSCALP_HOME/logs/."""
    if home is not None:
        os.environ[HOME_ENV] = str(home.expanduser().absolute())
    root = autoscalp_home().root
    cfg = _config(config)
    ports = {k: v for k, v in {"prefect_port": prefect_port, "mlflow_port": mlflow_port,
                               "serve_port": serve_port}.items() if v is not None}  # fmt: skip
    try:
        cfg = cfg.model_copy(update={"up": type(cfg.up).model_validate({**cfg.up.model_dump(), **ports})})
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None
    named = config or os.environ.get("AUTOSCALP_CONFIG")
    config_path = Path(named).absolute() if named else None

    with user_errors():
        lock = StackLock(root)
        stale = lock.acquire()
        try:
            _run(cfg, config_path, root, stale)
        finally:
            lock.release()


def _run(cfg: ProductConfig, config_path: Path | None, root: Path, stale: Holder | None) -> None:
    home = autoscalp_home()
    if stale is not None:
        previous = (read_state(root) or {}).get("session")
        left = leftovers(previous) if previous else set()
        _say(f"stale lock: the last `autoscalp up` on {root} (pid {stale.pid}) is gone"
             + (f"; stopping what it left running (pids {sorted(left)})" if left else ""))
        procs.stop(left, cfg.up.stop_grace_s)
    session = uuid.uuid4().hex[:12]
    ports = resolve_ports(wanted_ports(cfg))
    components = plan(cfg, config_path, home, ports, session)
    started = now_iso()
    supervisor: Supervisor

    def save(running: bool = True) -> None:
        write_state(root, {
            "running": running, "pid": os.getpid(), "pid_start": procs.start_time(os.getpid()), "session": session,
            "home": str(root), "config": str(config_path) if config_path else None, "started_at": started,
            "updated_at": now_iso(), "ports": ports,
            "components": {name: child.to_json() for name, child in supervisor.children.items()},
        })  # fmt: skip

    supervisor = Supervisor(components, cfg.up, root / "logs", session, _say, on_change=save)
    stop = lambda *_: supervisor.stopping.set()  # noqa: E731 (Ctrl-C and `down` end the watch the same way)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    _say(f"starting {', '.join(c.name for c in components)} on {root} (logs in {root / 'logs'})")
    try:
        supervisor.start_all()
        if not supervisor.stopping.is_set():
            _print_table(supervisor, root)
            supervisor.watch()
    finally:
        _say("stopping the stack")
        killed = supervisor.stop_all()
        save(running=False)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _say("stopped" + (f" ({len(killed)} processes needed SIGKILL: {killed})" if killed else ""))


def _print_table(supervisor: Supervisor, root: Path) -> None:
    table = Table("component", "where", "pid", "log", title=f"autoscalp up: {root}")
    for child in supervisor.children.values():
        table.add_row(child.name, child.component.url or "-", str(child.proc.pid), str(child.log))
    stdout.print(table)
    stdout.print("Ctrl-C here, or `autoscalp down`, stops the stack.")
    sys.stdout.flush()


def down_command(
    home: HomeOption = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for `up` to stop its children.")] = 120.0,
) -> None:
    """Stop the `autoscalp up` running on the project directory (and anything it left behind)."""
    root = home.expanduser().absolute() if home is not None else autoscalp_home().root
    holder, state = read_holder(root), read_state(root)
    stopped = False
    if holder is not None and holder.alive():
        stdout.print(f"stopping autoscalp up (pid {holder.pid}) on {root}")
        os.kill(holder.pid, signal.SIGTERM)
        if procs.wait_gone({holder.pid}, timeout):
            stdout.print(f"autoscalp up did not stop within {timeout:g} s: killing it and its children")
            procs.stop({holder.pid}, 0.0, signal.SIGKILL)
        stopped = True
    left = leftovers(state["session"]) if state and state.get("session") else set()
    if left:
        stdout.print(f"stopping {len(left)} processes left by the session {state['session']}: {sorted(left)}")
        procs.stop(left, 10.0)
    if not stopped and not left:
        stdout.print(f"no autoscalp up runs on {root}")
    elif state is not None:
        write_state(root, {**(read_state(root) or state), "running": False, "updated_at": now_iso()})


def register(app: typer.Typer) -> None:
    app.command("up")(up_command)
    app.command("down")(down_command)
