"""`autoscalp schedule` against a running Prefect server: both deployments are registered with their
schedules, and a scheduled run of the ingest deployment fires and completes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The server helpers of the ingest-flow server test (tests/ is not a package: load it by path).
_spec = importlib.util.spec_from_file_location("_ingest_server", Path(__file__).with_name("test_ingest_flow_server.py"))
_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_server)
REPO, free_port, post, wait_healthy = _server.REPO, _server.free_port, _server.post, _server.wait_healthy

CONFIG = """\
extends: {base}
sources:
  synthetic:
    ticks: 5000
schedule:
  ingest_every_minutes: 0.1   # every 6 s
  retrain_every_hours: 1000.0
"""


@pytest.mark.slow
def test_a_scheduled_ingest_run_fires_and_completes(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "AUTOSCALP_HOME": str(tmp_path / "home"), "PREFECT_HOME": str(tmp_path / "prefect-server"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("AUTOSCALP_CONFIG", None)
    (tmp_path / "prefect-server").mkdir()
    config = tmp_path / "schedule.yaml"
    config.write_text(CONFIG.format(base=REPO / "conf" / "base.yaml"))
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    serving = None
    try:
        wait_healthy(api, server)
        serve_log = tmp_path / "serve.log"
        # a file, not a pipe: an unread pipe fills up and blocks the serving process
        serving = subprocess.Popen([sys.executable, "-m", "flows", "-v", "schedule", "--config", str(config)],
                                   env={**env, "PREFECT_API_URL": api}, cwd=REPO,
                                   stdout=serve_log.open("w"), stderr=subprocess.STDOUT)
        deadline, completed, deployments, runs = time.monotonic() + 150, [], {}, []
        while time.monotonic() < deadline and not completed:
            assert serving.poll() is None, serve_log.read_text()[-3000:]
            deployments = {d["name"]: d for d in post(f"{api}/deployments/filter", {"limit": 10})}
            if "ingest" in deployments:
                # the scheduler creates runs ahead of time: ask for the completed ones
                runs = post(f"{api}/flow_runs/filter", {
                    "limit": 20, "deployments": {"id": {"any_": [deployments["ingest"]["id"]]}},
                    "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
                completed = [r for r in runs if r["state_type"] == "COMPLETED"]
            time.sleep(2)
        assert completed, (f"no scheduled ingest run completed within 150 s: {[r['state_type'] for r in runs]} "
                           f"{serve_log.read_text()[-2000:]}")
        assert completed[0]["auto_scheduled"] is True
        assert set(deployments) == {"ingest", "retrain"}
        [retrain_schedule] = deployments["retrain"]["schedules"]
        assert retrain_schedule["schedule"]["interval"] == 1000 * 3600
    finally:
        if serving is not None:
            serving.terminate()
            serving.wait(timeout=30)
        server.terminate()
        server.wait(timeout=30)
