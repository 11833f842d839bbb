"""Drift asks a real Prefect server for an early retrain: the daemon's request creates a run of the
``retrain`` deployment with the trigger reason as its parameter; without the deployment the request
fails, is journaled and says why."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("_ingest_server", Path(__file__).with_name("test_ingest_flow_server.py"))
_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_server)
free_port, wait_healthy, post = _server.free_port, _server.wait_healthy, _server.post

SYMBOL = "BTC/USDT:USDT"


@pytest.mark.slow  # a Prefect server starts: ~15-25 s on 2 cores
def test_a_drift_request_creates_a_retrain_run_with_its_reason(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.retrain import retrain_flow
    from flows.schedule import RETRAIN_DEPLOYMENT
    from serving.daemon.config import ServeConfig
    from serving.daemon.drift import DRIFT_TAG
    from serving.daemon.feedback import RETRAIN_NOTE, Feedback
    from serving.runtime.telemetry import Telemetry
    from serving.state.journal import Journal

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    (tmp_path / "prefect").mkdir()
    started = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    journal = Journal(tmp_path / "daemon.sqlite")
    journal.begin_run(0)
    try:
        wait_healthy(api, server)
        print(f"server up in {time.monotonic() - started:.1f} s")
        with temporary_settings(updates={PREFECT_API_URL: api}):
            feedback = Feedback(SYMBOL, ServeConfig(), Telemetry([SYMBOL]), journal, None)
            # no deployment yet: the request fails, is journaled, and the daemon goes on
            assert feedback.request("drift: psi 0.31 on ofi_tick_100") == "failed"
            retrain_flow.to_deployment(name=RETRAIN_DEPLOYMENT, parameters={"config_path": "conf/x.yaml"}).apply()
            assert feedback.request("drift: psi 0.32 on ofi_tick_100") == "prefect"
        runs = post(f"{api}/flow_runs/filter", {"limit": 10})
        [run] = runs
        assert run["parameters"] == {"config_path": "conf/x.yaml", "trigger": "drift: psi 0.32 on ofi_tick_100",
                                     "symbols": [SYMBOL]}  # fmt: skip
        assert DRIFT_TAG in run["tags"] and run["state_type"] == "SCHEDULED"
        assert run["name"].startswith(f"retrain {SYMBOL} (drift: psi 0.32")
        notes = [text for _, _, text in journal.notes(RETRAIN_NOTE)]
        assert notes[0] == ("failed: drift: psi 0.31 on ofi_tick_100; RetrainRequestError: no deployment "
                            "'retrain/retrain' on the Prefect API: is `autoscalp schedule` serving it there?")
        assert notes[1].startswith(f"prefect: drift: psi 0.32 on ofi_tick_100; flow run {run['id']} on {api}")
        assert feedback.telemetry.retrain_requests == {"failed": 1, "prefect": 1}
    finally:
        journal.close()
        server.terminate()
        server.wait(timeout=30)
