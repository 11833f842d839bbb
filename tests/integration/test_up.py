"""`autoscalp up` as a user runs it: the whole local stack on free ports, a retrain run triggered
through the Prefect API registers a model version in the MLflow server, its promotion reaches the
daemon, a second `up` on the same directory is refused, and `autoscalp down` leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from flows.stack import procs
from pipeline.config import QualityConfig, SyntheticSourceConfig
from pipeline.data.ingest import ingest
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.data.store import TickStore

from .short_data import short_data_yaml

REPO = Path(__file__).resolve().parents[2]
NAME = "autoscalp-BTC-USDT-USDT"
SYMBOL = "BTC/USDT:USDT"
# A small market and budget (tests/integration/short_data.py): the point
# is the stack, not the model. The promotion is the test's own step, not the retrain's gate.
SMALL_MARKET = {"sources": {"synthetic": {"ticks": 30000}}, "training": {"tuning": {"trials": 1}},
                "promotion": {"after_retrain": False},
                "schedule": {"ingest_every_minutes": 100000.0, "retrain_every_hours": 100000.0},
                "serve": {"speed": 20.0, "model_poll_s": 1.0},
                "up": {"prefect_port": "auto", "mlflow_port": "auto", "serve_port": "auto", "stop_grace_s": 15.0}}


def call(url: str, body: dict | None = None) -> dict | list:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def wait_for(what: str, check, timeout_s: float, up: subprocess.Popen, log: Path,  # noqa: ANN001, ANN201
             every_s: float = 1.0):  # fmt: skip
    """``check()`` until it returns something, while ``up`` runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert up.poll() is None, f"up exited ({up.returncode}) waiting for {what}:\n{log.read_text()[-3000:]}"
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(every_s)
    raise AssertionError(f"no {what} within {timeout_s:g} s:\n{log.read_text()[-3000:]}")


def processes_of(home: Path) -> set[int]:
    """Every process whose environment names this AUTOSCALP_HOME: up, its children and theirs."""
    needle = f"AUTOSCALP_HOME={home}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes().split(b"\0"):
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.add(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow  # ~100 s on 2 shared cores: four servers start, a real retrain runs through them
def test_up_runs_the_stack_retrains_through_prefect_serves_the_promoted_champion_and_down_leaves_nothing(tmp_path):
    home = tmp_path / "home"
    config = tmp_path / "up.yaml"
    config.write_text(short_data_yaml(REPO / "conf" / "base.yaml", **SMALL_MARKET))
    env = {**os.environ, "AUTOSCALP_HOME": str(home),
           # the runner looks for new flow runs every 2 s instead of 10: the test waits less
           "PREFECT_RUNNER_POLL_FREQUENCY": "2"}  # fmt: skip
    for key in ("AUTOSCALP_CONFIG", "PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)

    def autoscalp(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flows", *args], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip

    started, timings = time.monotonic(), {}
    # the store `autoscalp ingest --source synthetic` would write with this config, in-process (seconds sooner)
    ingest(SyntheticSource(SyntheticSourceConfig(ticks=30_000), (SYMBOL,)), TickStore(home / "store"), QualityConfig())

    log = tmp_path / "up.log"
    up = subprocess.Popen([sys.executable, "-m", "flows", "up", "--config", str(config)], env=env, cwd=REPO,
                          stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    pids: dict[int, int | None] = {}  # pid -> its start time (pids get reused)
    try:
        state_file = home / "up" / "state.json"

        def all_healthy() -> dict | None:
            state = json.loads(state_file.read_text()) if state_file.exists() else {}
            states = {n: c["state"] for n, c in state.get("components", {}).items()}
            return state if states == dict.fromkeys(("prefect", "mlflow", "schedule", "serve"), "healthy") else None

        state = wait_for("healthy stack", all_healthy, 150, up, log)
        timings["healthy"] = time.monotonic() - started
        ports = state["ports"]
        assert len(set(ports.values())) == 3 and state["pid"] == up.pid
        prefect, mlflow = f"http://127.0.0.1:{ports['prefect']}", f"http://127.0.0.1:{ports['mlflow']}"
        daemon = f"http://127.0.0.1:{ports['serve']}"
        # each answers on its own, and up printed where the UIs are
        assert call(f"{prefect}/api/health") is True
        assert urllib.request.urlopen(f"{mlflow}/health", timeout=10).status == 200
        assert call(f"{daemon}/health")["state"] == "running"
        printed = log.read_text()
        assert f"prefect is up: {prefect}" in printed and f"mlflow is up: {mlflow}" in printed

        # a run of the retrain deployment, through the Prefect API
        [retrain] = call(f"{prefect}/api/deployments/filter", {"deployments": {"name": {"any_": ["retrain"]}}})
        run = call(f"{prefect}/api/deployments/{retrain['id']}/create_flow_run", {})

        # meanwhile: a second up on the same directory is refused, in one line, starting nothing
        second = autoscalp("up", "--config", str(config), timeout=60)
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert second.returncode == 2 and len(errors) == 1, second.stderr[-2000:]
        assert f"already runs on {home} (pid {up.pid})" in errors[0]

        def finished() -> dict | None:
            r = call(f"{prefect}/api/flow_runs/{run['id']}")
            return r if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        finished_run = wait_for("finished retrain run", finished, 240, up, log, every_s=2.0)
        timings["retrained"] = time.monotonic() - started
        assert finished_run["state_type"] == "COMPLETED", (finished_run["state"], (home / "logs" / "schedule.log")
                                                           .read_text()[-3000:])  # fmt: skip

        # the new version, as the MLflow server's REST API shows it
        query = urllib.parse.urlencode({"filter": f"name='{NAME}'"})
        versions = call(f"{mlflow}/api/2.0/mlflow/model-versions/search?{query}")["model_versions"]
        assert [v["version"] for v in versions] == ["1"]
        query = urllib.parse.urlencode({"name": NAME, "alias": "challenger"})
        assert call(f"{mlflow}/api/2.0/mlflow/registered-models/alias?{query}")["model_version"]["version"] == "1"
        assert call(f"{mlflow}/api/2.0/mlflow/runs/get?run_id={versions[0]['run_id']}")["run"]["info"]["status"] \
            == "FINISHED"

        # promoted through the registry's aliases API, it is what the daemon trades
        call(f"{mlflow}/api/2.0/mlflow/registered-models/alias", {"name": NAME, "alias": "champion", "version": "1"})

        def serving_version() -> int | None:
            return call(f"{daemon}/health")["models"][SYMBOL]["version"]

        assert wait_for("champion in the daemon", serving_version, 90, up, log, every_s=0.5) == 1
        timings["served"] = time.monotonic() - started
        pids = {pid: procs.start_time(pid) for pid in processes_of(home)}
        assert {c["pid"] for c in state["components"].values()} | {up.pid} <= set(pids)

        done = autoscalp("down", "--home", str(home))
        assert done.returncode == 0, done.stderr[-2000:]
        assert up.wait(timeout=30) == 0
        timings["down"] = time.monotonic() - started
        print("seconds since the start:", {k: round(v) for k, v in timings.items()})
    finally:
        if up.poll() is None:  # the test failed before `down`: leave nothing running
            autoscalp("down", "--home", str(home))
            up.wait(timeout=60)
    assert processes_of(home) == set()
    assert not [pid for pid, started in pids.items() if procs.alive(pid, started)]
    assert json.loads((home / "up" / "state.json").read_text())["running"] is False
    assert not (home / "up" / "up.lock").exists()
    printed = log.read_text()
    assert "needed SIGKILL" not in printed, printed[-2000:]  # every child stopped on its signal
