"""`autoscalp status` on a real MLflow SQLite registry, a real daemon HTTP face (Telemetry behind
ControlServer) and, with nothing running, a clear "unavailable: reason" for each part."""

from __future__ import annotations

import json
import socket
import time
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.config import TrackingConfig
from pipeline.training import aliases, tracking
from pipeline.training.registry import CHALLENGER, model_name
from serving.runtime.http import ControlServer
from serving.runtime.telemetry import Telemetry

SYMBOL = "BTC/USDT:USDT"
runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def no_scheduler(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)


@pytest.fixture()
def config_path(tmp_path):
    """A config whose daemon port nothing listens on."""
    path = tmp_path / "status.yaml"
    path.write_text(f"serve:\n  http_port: {free_port()}\n")
    return str(path)


def status_json(*args: str) -> dict:
    result = runner.invoke(app, ["status", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_with_nothing_running_each_part_says_why(home, no_scheduler, config_path):
    status = status_json("--config", config_path)
    assert status["models"]["unavailable"].startswith("no MLflow store at ")
    assert status["schedule"]["unavailable"].startswith("no scheduler running")
    assert status["daemon"]["unavailable"].startswith("daemon not running: nothing answers on http://127.0.0.1:")
    assert not (home / "mlflow").exists()  # status reads; it creates no store
    result = runner.invoke(app, ["status", "--config", config_path])
    assert result.exit_code == 0 and result.output.count("unavailable:") == 3, result.output


def test_an_unreachable_prefect_api_is_unavailable_not_a_traceback(home, config_path):
    api = f"http://127.0.0.1:{free_port()}/api"
    status = status_json("--config", config_path, "--prefect-api", api)
    assert status["schedule"]["unavailable"].startswith(f"no scheduler running: the Prefect API {api} does not answer")


def test_daemon_state_from_health_and_metrics(home, no_scheduler, config_path):
    telemetry = Telemetry([SYMBOL])
    telemetry.set_state("running")
    telemetry.tick(0, 4_000)
    telemetry.set_account(10_250.0, 250.0, 0.031)
    telemetry.set_position(SYMBOL, -0.012, 3.5)
    telemetry.set_kill_switch("halted", "max drawdown")
    version = aliases.VersionInfo(model_name(SYMBOL), 3, ("champion",), {}, "run", int((time.time() - 7200) * 1e3))
    telemetry.set_model(SYMBOL, SimpleNamespace(version=version, version_label="v3 (champion)"))
    server = ControlServer(telemetry.health, telemetry.exposition, token="t", port=0).start()
    try:
        status = status_json("--config", config_path, "--daemon", server.url)
        plain = runner.invoke(app, ["status", "--config", config_path, "--daemon", server.url]).output
    finally:
        server.stop()
    daemon = status["daemon"]
    metrics = daemon["metrics"]
    assert (metrics["kill_switch"], metrics["equity_usdt"], metrics["pnl_usdt"]) == ("halted", 10_250.0, 250.0)
    assert metrics["drawdown_ratio"] == pytest.approx(0.031)
    per_symbol = metrics["symbols"][SYMBOL]
    assert (per_symbol["position_qty"], per_symbol["leverage"], per_symbol["model_version"]) == (-0.012, 3.5, 3.0)
    assert per_symbol["model_age_s"] == pytest.approx(7200, abs=60)
    assert per_symbol["drift_psi_max"] is None  # no drift monitor: no PSI series
    assert daemon["health"]["kill_switch"] == {"state": "halted", "reason": "max drawdown"}
    for text in ("halted: max drawdown", "10,250.00", "+250.00", "-0.012", "v3 (champion)", "2.0 h"):
        assert text in plain, (text, plain)


def test_champion_and_challenger_with_their_latest_backtests(home, no_scheduler, config_path):
    from mlflow import MlflowClient

    from serving.backtest import evaluation

    _, experiment_id = tracking.connect(TrackingConfig())
    uri = tracking.tracking_uri(TrackingConfig())
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = model_name(SYMBOL)
    client.create_registered_model(name)
    run = client.create_run(experiment_id)
    for auc, tick_us in (("0.61", "4.21"), ("0.64", "6.87")):
        client.create_model_version(name, f"{run.info.artifact_uri}/ensemble", run.info.run_id,
                                    tags={"autoscalp.oos_auc": auc, "autoscalp.serve_tick_us": tick_us})  # fmt: skip
    aliases.promote(name, 1)
    client.set_registered_model_alias(name, CHALLENGER, "2")
    # backtests logged by the product's own writer: an older and a newer one of v1, none of v2
    for pnl in (-5.0, 42.5):
        evaluation.log_backtest(backtest_result(f"models:/{name}/1", pnl), f"backtest {SYMBOL} v1", configs())
        time.sleep(0.01)

    status = status_json("--config", config_path)
    entry = status["models"]["symbols"][SYMBOL]
    champion, challenger = entry["champion"], entry["challenger"]
    assert (champion["version"], challenger["version"]) == (1, 2)
    assert (champion["oos_auc"], challenger["oos_auc"]) == (0.61, 0.64)
    assert (champion["serve_tick_us"], challenger["serve_tick_us"]) == (4.21, 6.87)
    assert champion["backtest"]["metrics"]["net_pnl_usdt"] == 42.5  # the latest of the two
    assert champion["backtest"]["kind"] == "backtest" and champion["backtest"]["run_name"] == f"backtest {SYMBOL} v1"
    assert challenger["backtest"] is None
    assert 0 <= champion["age_s"] < 600
    plain = runner.invoke(app, ["status", "--config", config_path]).output
    assert "v1" in plain and "v2" in plain and "+42.50" in plain and "none yet" in plain and "6.9" in plain, plain


def configs():
    from serving.backtest.config import BacktestConfig, PromotionGate
    from serving.backtest.evaluation import Configs
    from serving.config import EngineConfig
    from serving.venues.config import VenueConfig

    return Configs(EngineConfig(), VenueConfig(), BacktestConfig(), PromotionGate(), TrackingConfig(), 10)


def backtest_result(model_uri: str, pnl_usdt: float):
    """A BacktestResult of a flat ledger whose equity ends ``pnl_usdt`` above the start."""
    from serving.backtest.runner import BacktestResult, BacktestRun
    from serving.metrics import Ledger, summarise

    start, end = 1_700_000_000_000_000_000, 1_700_000_060_000_000_000
    equity = pd.DataFrame({"ts_ns": [start, end], "equity_usdt": [10_000.0, 10_000.0 + pnl_usdt],
                           "position_qty": [0.0, 0.0], "notional_usdt": [0.0, 0.0], "leverage": [0.0, 0.0],
                           "mid": [60_000.0, 60_010.0], "regime": ["normal", "normal"]})  # fmt: skip
    fills = pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
        ("ts_ns", "int64"), ("symbol", object), ("client_id", object), ("side", "int64"), ("price", "float64"),
        ("qty", "float64"), ("fee_usdt", "float64"), ("liquidity", object), ("strategy", object), ("regime", object))})
    funding = pd.DataFrame({c: pd.Series(dtype=t) for c, t in (
        ("ts_ns", "int64"), ("symbol", object), ("rate", "float64"), ("amount_usdt", "float64"))})
    ledger = Ledger(10_000.0, equity, fills, funding, 0, start, end)
    run = BacktestRun("main", summarise(ledger), ledger, {}, {})
    provenance = {"symbol": SYMBOL, "exchange": "synthetic", "start_ns": start, "end_ns": end, "events": 2,
                  "model": {"uri": model_uri}, "data_fingerprint": "f", "config_hash": "c", "code_version": "test"}
    return BacktestResult(run, {}, provenance)
