"""The ingest flow against a running Prefect server (PREFECT_API_URL set), not the temporary one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"prefect server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("prefect server did not become healthy")


def post(url: str, body: dict) -> list | dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_ingest_flow_runs_against_a_running_prefect_server(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "AUTOSCALP_HOME": str(tmp_path / "home"),
        "PREFECT_HOME": str(tmp_path / "prefect-server"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    (tmp_path / "prefect-server").mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(api, server)
        result = subprocess.run(
            [sys.executable, "-m", "flows", "ingest", "--source", "synthetic", "--json"],
            env={**env, "PREFECT_API_URL": api}, capture_output=True, text=True, timeout=300, cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        [report] = json.loads(result.stdout)
        assert report["added"] > 0

        runs = post(f"{api}/flow_runs/filter", {"limit": 10})
        assert [(r["name"] != "", r["state_type"]) for r in runs] == [(True, "COMPLETED")]
        tasks = post(f"{api}/task_runs/filter", {"limit": 10})
        assert [t["state_type"] for t in tasks] == ["COMPLETED"]
        assert tasks[0]["name"].startswith("ingest synthetic:BTC/USDT:USDT")
    finally:
        server.terminate()
        server.wait(timeout=30)
