"""The health/metrics/control server over real HTTP on a free local port."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import pytest

from serving.runtime.http import TOKEN_ENV, ControlServer
from serving.runtime.telemetry import Telemetry

SYMBOL = "BTC/USDT:USDT"
TOKEN = "s3cret-token"


@pytest.fixture()
def serve():
    servers = []

    def start(token: str | None = TOKEN, health=None) -> ControlServer:
        telemetry = Telemetry([SYMBOL])
        server = ControlServer(health or telemetry.health, telemetry.exposition, token=token).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def request(url: str, method: str = "GET", token: str | None = None, body: bytes | None = None):
    """(status, headers, body) for any status."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_health_and_metrics(serve):
    server = serve(health=lambda: {"state": "running", "pnl": math.nan, "feeds": {"binance": "connected"}})
    assert server.url.startswith("http://127.0.0.1:")
    status, headers, body = request(f"{server.url}/health")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"state": "running", "pnl": None, "feeds": {"binance": "connected"}}  # NaN -> null
    status, headers, body = request(f"{server.url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert b"autoscalp_tick_to_decision_seconds_bucket" in body and b"autoscalp_model_age_seconds" in body
    assert request(f"{server.url}/nothing")[0] == 404


def test_default_health_is_the_telemetrys(serve):
    health = json.loads(request(f"{serve().url}/health")[2])
    assert health["state"] == "starting" and health["models"][SYMBOL]["model"] == "no model"
    assert health["last_tick_age_s"] is None and health["kill_switch"]["state"] == "active"


def test_control_needs_the_bearer_token_and_queues_commands(serve):
    server = serve()
    url = f"{server.url}/control/pause"
    for token in (None, "wrong", TOKEN + "x", ""):
        status, headers, _ = request(url, "POST", token)
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer", token
    assert server.pending() == []
    status, _, body = request(url, "POST", TOKEN, json.dumps({"reason": "exchange maintenance"}).encode())
    assert status == 202 and json.loads(body) == {"queued": "pause", "reason": "exchange maintenance"}
    assert request(f"{server.url}/control/flatten", "POST", TOKEN)[0] == 202
    assert request(f"{server.url}/control/resume", "POST", TOKEN, b"not json")[0] == 400
    assert request(f"{server.url}/control/explode", "POST", TOKEN)[0] == 404
    commands = server.pending()
    assert [(c.action, c.reason, c.client) for c in commands] == [("pause", "exchange maintenance", "127.0.0.1"),
                                                                  ("flatten", "", "127.0.0.1")]  # fmt: skip
    assert server.pending() == []


def test_control_is_off_without_a_token_and_the_token_comes_from_the_environment(serve, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    off = serve(token=None)
    assert request(f"{off.url}/control/pause", "POST", "anything")[0] == 403
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    on = serve(token=None)
    assert request(f"{on.url}/control/pause", "POST", TOKEN)[0] == 401
    assert request(f"{on.url}/control/pause", "POST", "from-env")[0] == 202
    assert [c.action for c in on.pending()] == ["pause"]
