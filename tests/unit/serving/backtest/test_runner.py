"""A backtest end to end on the simulator's ticks: deterministic, consistent books, baselines."""

from __future__ import annotations

import numpy as np
import pytest

from serving.backtest.config import BacktestConfig
from serving.backtest.runner import FLAT, NO_MODEL, run_backtest, without_model
from serving.config import EngineConfig
from serving.venues.config import VenueConfig

from .conftest import STRIDE

CONFIG = BacktestConfig()


@pytest.fixture(scope="module")
def result(replay, ensemble):
    return run_backtest(replay, ensemble, STRIDE, EngineConfig(), VenueConfig(), CONFIG, model={"name": "m", "version": 1})


def test_the_same_inputs_give_the_same_trades(replay, ensemble, result):
    again = run_backtest(replay, ensemble, STRIDE, EngineConfig(), VenueConfig(), CONFIG, baselines=False)
    assert result.main.summary["trade_list_hash"] == again.main.summary["trade_list_hash"]
    assert result.main.counts == again.main.counts
    assert result.provenance["trade_list_hash"] == result.main.summary["trade_list_hash"]
    assert result.provenance["data_fingerprint"] == replay.fingerprint


def test_another_latency_seed_gives_other_trades(replay, ensemble, result):
    venue = VenueConfig.model_validate({"latency": {"seed": 99}})
    other = run_backtest(replay, ensemble, STRIDE, EngineConfig(), venue, CONFIG, baselines=False)
    assert result.main.counts["fills"] > 0
    assert other.main.summary["trade_list_hash"] != result.main.summary["trade_list_hash"]


def test_every_event_of_the_window_is_replayed_and_the_books_agree(replay, result):
    ledger = result.main.ledger
    assert result.main.counts["events"] == replay.window_events
    assert ledger.equity.ts_ns.is_monotonic_increasing
    assert ledger.equity.ts_ns.iloc[0] >= replay.start_ns
    fills = ledger.fills
    assert set(fills.liquidity) <= {"maker", "taker", "liquidation"}
    net = float((fills.side * fills.qty).sum())
    assert abs(net - ledger.equity.position_qty.iloc[-1]) < 1e-9
    # equity = start + realised + unrealised - fees + funding: the net PnL the summary reports
    assert result.main.summary["net_pnl_usdt"] == pytest.approx(ledger.equity.equity_usdt.iloc[-1] - CONFIG.equity_usdt)


def test_baselines_run_on_the_same_window(result):
    assert set(result.baselines) == {NO_MODEL, FLAT}
    assert result.baselines[FLAT].summary["net_pnl_usdt"] == 0.0
    assert result.baselines[FLAT].summary["trades"] == 0
    assert result.baselines[NO_MODEL].counts["events"] == result.main.counts["events"]


def test_the_no_model_baseline_removes_every_model_gate():
    config = without_model(EngineConfig())
    assert config.mean_reversion.model_edge == config.momentum_breakout.model_edge == config.market_making.model_skew == 0


def test_without_a_model_the_main_run_is_the_no_model_run(replay):
    run = run_backtest(replay, None, STRIDE, EngineConfig(), VenueConfig(), CONFIG, baselines=False)
    assert run.main.name == NO_MODEL and run.provenance["model"]["uri"] is None
    assert np.isfinite(run.main.summary["net_pnl_usdt"])
