"""The four children of ``autoscalp up``: what each runs, with which environment, where its UI is and
how it is known to be healthy.

- prefect: ``prefect server start`` (API and UI), its database under $AUTOSCALP_HOME/prefect.
- mlflow: ``mlflow server --workers 1`` on the configured tracking store (the embedded SQLite one
  by default, artefacts under $AUTOSCALP_HOME/mlflow/artifacts, as ``autoscalp ui``).
- schedule: ``autoscalp schedule``, the ingest and retrain deployments served on that Prefect server;
  healthy once both deployments were polled by this very process (they outlive it in the database).
- serve: ``autoscalp serve``, the daemon (paper unless the config says otherwise), /health.

schedule and serve (and every flow run the schedule starts) reach Prefect and MLflow through the
servers: PREFECT_API_URL and MLFLOW_TRACKING_URI point at them (``training.tracking.uri``, when set,
still wins, as everywhere).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from flows.config import ProductConfig
from flows.stack.config import ComponentName
from flows.stack.state import MARKER
from pipeline.errors import AutoscalpError
from pipeline.home import Home

HOST = "127.0.0.1"
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Component:
    name: ComponentName
    argv: list[str]
    env: dict[str, str]
    healthy: Callable[[float], bool]  # called with the wall-clock time the child started
    url: str | None = None  # where a person looks
    port: int | None = None
    after: tuple[str, ...] = ()  # started once these are healthy
    stop_signal: int = signal.SIGTERM  # all four stop gracefully on it (Prefect's runner: handle_sigterm)


def free_port(taken: set[int] | frozenset[int] = frozenset()) -> int:
    """A port nothing listens on now (the kernel's choice), not one of ``taken``."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def resolve_ports(wanted: dict[str, int]) -> dict[str, int]:
    """0 becomes a free port (all distinct); a fixed port already taken is refused, naming it."""
    fixed = {name: port for name, port in wanted.items() if port}
    for name, port in fixed.items():
        if port_in_use(port):
            raise AutoscalpError(f"port {port} for {name} is in use on {HOST}; set up.{name}_port "
                                 f"(or --{name}-port) to another port, or auto")
    if len(set(fixed.values())) != len(fixed):
        raise AutoscalpError(f"up: two components on the same port: {fixed}")
    taken, out = set(fixed.values()), dict(fixed)
    for name, port in wanted.items():
        if not port:
            out[name] = free_port(taken)
            taken.add(out[name])
    return out


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def deployments_polled(api: str, names: tuple[str, ...], since: float) -> bool:
    """Every deployment in ``names`` exists and was polled by a runner after ``since`` (epoch s)."""
    body = json.dumps({"deployments": {"name": {"any_": list(names)}}, "limit": 50}).encode()
    request = urllib.request.Request(f"{api}/deployments/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
            found = json.loads(response.read())
    except (OSError, ValueError):
        return False
    polled = {d["name"] for d in found
              if d.get("last_polled") and datetime.fromisoformat(d["last_polled"]).timestamp() >= since - 1}
    return set(names) <= polled


def _flows(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows", *args]


def plan(config: ProductConfig, config_path: Path | None, home: Home, ports: dict[str, int],
         session: str) -> list[Component]:  # fmt: skip
    """The components named in ``config.up.components``, on ``ports`` (already resolved)."""
    from pipeline.training.tracking import artifact_root, embedded_uri, tracking_uri

    wanted = config.up.components
    base = {**os.environ, "AUTOSCALP_HOME": str(home.root), "PREFECT_HOME": str(home.prefect),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    if config_path is not None:
        base["AUTOSCALP_CONFIG"] = str(config_path)
    config_args = ["--config", str(config_path)] if config_path is not None else []
    components: list[Component] = []
    clients = dict(base)  # what schedule and serve (and flow runs) see

    if "prefect" in wanted:
        port = ports["prefect"]
        api = f"http://{HOST}:{port}/api"
        clients["PREFECT_API_URL"] = api
        components.append(Component(
            "prefect", [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)],
            {**base, "PREFECT_API_URL": api}, lambda _s, api=api: http_ok(f"{api}/health"),
            url=f"http://{HOST}:{port}", port=port))

    if "mlflow" in wanted:
        store = tracking_uri(config.training.tracking)
        if store.startswith(("http://", "https://")):
            raise AutoscalpError(f"up.components has mlflow, but runs are tracked on the server {store} "
                                 "(training.tracking.uri / MLFLOW_TRACKING_URI): drop mlflow from up.components")
        port = ports["mlflow"]
        argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--host", HOST,
                "--port", str(port), "--workers", "1"]
        if store == embedded_uri():
            Path(store.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            # new experiments keep their artefacts where the embedded store puts them (clients write
            # there directly); proxied uploads, if any, land there too instead of ./mlartifacts
            argv += ["--default-artifact-root", artifact_root().as_uri(),
                     "--artifacts-destination", artifact_root().as_uri()]
        server_env = {k: v for k, v in base.items() if k != "MLFLOW_TRACKING_URI"}
        # its job runners (seven huey consumers) serve GenAI features autoscalp does not use
        server_env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        url = f"http://{HOST}:{port}"
        clients["MLFLOW_TRACKING_URI"] = url
        components.append(Component("mlflow", argv, server_env, lambda _s, url=url: http_ok(f"{url}/health"),
                                    url=url, port=port))

    servers = tuple(c.name for c in components)
    if "schedule" in wanted:
        if getattr(config.schedule, "work_pool", None):
            raise AutoscalpError(f"schedule.work_pool is {config.schedule.work_pool!r}: the deployments run on "
                                 "that pool's workers, not in `up`; drop schedule from up.components")
        api = clients["PREFECT_API_URL"]
        # imported here: flows.schedule imports the flows and Prefect, which must come after the CLI
        # has set Prefect's logging environment (flows/_env.py)
        from flows.schedule import INGEST_DEPLOYMENT, RETRAIN_DEPLOYMENT

        names = (INGEST_DEPLOYMENT, RETRAIN_DEPLOYMENT)
        components.append(Component(
            "schedule", _flows("-v", "schedule", *config_args), clients,
            lambda started, api=api: deployments_polled(api, names, started),
            url=f"{components[0].url}/deployments", after=servers))

    if "serve" in wanted:
        port = ports["serve"]
        url = f"http://{HOST}:{port}"
        components.append(Component(
            "serve", _flows("serve", *config_args, "--http-port", str(port)), clients,
            lambda _s, url=url: http_ok(f"{url}/health"), url=f"{url}/health", port=port,
            after=tuple(n for n in servers if n == "mlflow")))
    # each its own copy: the marker names the component
    return [replace(c, env={**c.env, MARKER: f"{session}/{c.name}"}) for c in components]


def wanted_ports(config: ProductConfig) -> dict[str, int]:
    up, out = config.up, {}
    if "prefect" in up.components:
        out["prefect"] = up.prefect_port
    if "mlflow" in up.components:
        out["mlflow"] = up.mlflow_port
    if "serve" in up.components:
        out["serve"] = config.serve.http_port if up.serve_port is None else up.serve_port
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
