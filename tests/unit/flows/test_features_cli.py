"""`autoscalp features list|build` in-process, and the features flow's tasks called as plain functions."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.features import build_day_task, select_task
from pipeline.config import QualityConfig, SyntheticSourceConfig
from pipeline.data.ingest import ingest
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.data.store import TickStore
from pipeline.features.catalog import catalog
from pipeline.features.store import DayKey

SYMBOL = "BTC/USDT:USDT"
FEATURES = ["ofi_tick_50", "ofi_tick_50_z200", "tsi_tick_20", "rv_tick_20", "bookimb_l1", "spreadrel_l1",
            "ret_tick_20", "iat_tick_20"]
CONFIG = """
labels: {tp_bps: 2.0, sl_bps: 2.0, horizon_seconds: 30.0, fee_bps_per_side: 1.0}
features:
  selection: {count: 3, folds: 2}
"""
runner = CliRunner()


@pytest.fixture()
def ticks(home) -> TickStore:
    """~20 minutes of synthetic ticks, across midnight, in the test's AUTOSCALP_HOME."""
    store = TickStore(home / "store")
    start = datetime(2024, 1, 1, 23, 50, tzinfo=timezone.utc)
    ingest(SyntheticSource(SyntheticSourceConfig(ticks=20_000, start=start), (SYMBOL,)), store, QualityConfig())
    return store


@pytest.fixture()
def config_path(tmp_path) -> str:
    path = tmp_path / "features.yaml"
    path.write_text(CONFIG)
    return str(path)


def test_features_list_json_describes_every_candidate():
    result = runner.invoke(app, ["features", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == list(catalog())
    ofi = next(r for r in rows if r["name"] == "ofi_tick_50_z200")
    assert (ofi["family"], ofi["window"], ofi["unit"], ofi["transform"]) == ("ofi_tick", 50.0, "tick", "z200")
    assert ofi == {**catalog()["ofi_tick_50_z200"].describe(), "fits_warmup_budget": True}
    assert ofi["warmup_quotes"] > 0 and ofi["description"]
    assert any(not r["fits_warmup_budget"] for r in rows)


def test_features_list_prints_a_table():
    result = runner.invoke(app, ["features", "list"])
    assert result.exit_code == 0 and "rsi_tick_100_z2000" in result.stdout and "fit the warm-up budget" in result.stdout


def test_features_build_in_process_prints_the_selection_and_reuses_the_store(ticks, config_path, home):
    command = ["features", "build", "--no-prefect", "--config", config_path]
    command += [item for name in FEATURES for item in ("--feature", name)]
    first = runner.invoke(app, command + ["--json"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert [(p["date"], p["reused"]) for p in report["partitions"]] == [("2024-01-01", False), ("2024-01-02", False)]
    assert report["store"] == str(home / "features")
    selection = report["selection"]
    assert len(selection["names"]) == 3 and set(selection["names"]) <= set(FEATURES)
    assert (home / "features" / "selection.json").is_file()
    assert (home / "features" / "selections" / f"{selection['id']}.json").is_file()

    again = json.loads(runner.invoke(app, command + ["--json"]).stdout)
    assert [p["reused"] for p in again["partitions"]] == [True, True]
    assert again["selection"] == selection and again["dataset"] == report["dataset"]

    table = runner.invoke(app, command)
    assert table.exit_code == 0 and "selected 3 of 8 candidates" in table.stdout and "reused" in table.stdout


def test_features_build_bad_input_is_one_line_and_exit_2(ticks, config_path):
    result = runner.invoke(app, ["features", "build", "--no-prefect", "--config", config_path, "--feature", "nope"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown feature 'nope'; `autoscalp features list` shows every name"
    ]
    result = runner.invoke(app, ["features", "build", "--no-prefect", "--symbol", "ETH/USDT:USDT"])
    assert result.exit_code == 2 and "no day with both trades and quotes for ETH/USDT:USDT" in result.stderr


def test_the_flow_tasks_are_thin_calls_of_the_pipeline(ticks, config_path):
    day = DayKey("synthetic", SYMBOL, "2024-01-02")
    record = build_day_task.fn(day, FEATURES, config_path)
    assert record["rows"] > 0 and not record["reused"] and record["date"] == "2024-01-02"
    assert build_day_task.fn(day, FEATURES, config_path)["reused"]
    selection = select_task.fn([record], FEATURES, config_path)
    assert len(selection["names"]) == 3 and selection["params"]["fold_rows"][0] >= 50



def test_features_check_quick_passes_on_the_shipped_indicators():
    result = runner.invoke(app, ["features", "check", "--quick", "--json"])
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] and report["features"] > 0 and not report["leaks"]
