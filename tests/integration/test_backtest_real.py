"""Backtest plumbing on real Binance USD-M BTCUSDT ticks with L2 depth (../shared/data)."""

from __future__ import annotations

import numpy as np
import pytest

from flows.config import ProductConfig
from pipeline.data.ingest import ingest
from pipeline.data.sources import build_source, plan_sources
from pipeline.data.store import TickStore
from pipeline.features.core import KIND_DEPTH, KIND_QUOTE
from serving.backtest.config import BacktestConfig
from serving.backtest.data import load_replay, store_range
from serving.backtest.runner import run_backtest
from serving.backtest.signals import feature_rows
from serving.config import EngineConfig
from serving.venues.config import VenueConfig

SYMBOL = "BTC/USDT:USDT"
pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def store(shared_data, tmp_path_factory) -> TickStore:
    store = TickStore(tmp_path_factory.mktemp("real"))
    config = ProductConfig()
    path = shared_data / "binance_ws_raw" / "usdm_btcusdt_20240808.gz"
    for spec in plan_sources(config, "files", (str(path),), (), None):
        ingest(build_source(spec, config), store, config.quality)
    return store


def test_depth_joins_the_replay_from_the_snapshot_before_it(store):
    first, last = store_range(store, "binanceusdm", SYMBOL)
    start = first + 120 * 10**9  # 2 of the ~6 minutes in: the book is replayed from the snapshot before the read start
    data = load_replay(store, "binanceusdm", SYMBOL, start, last + 1, warmup_s=60.0, depth=True)
    plain = load_replay(store, "binanceusdm", SYMBOL, start, last + 1, warmup_s=60.0)
    kinds = data.events.kind
    assert (kinds == KIND_DEPTH).sum() > 3_000  # the capture has 6,551 diffs in ~6 minutes
    assert data.events.ts_ns[0] >= start - 60 * 10**9 and data.start == int(np.searchsorted(data.events.ts_ns, start))
    # the same trades and quotes, depth added beside them
    ticks, _ = data.events.ticks_only()
    assert np.array_equal(ticks.ts_ns, plain.events.ts_ns) and np.array_equal(ticks.kind, plain.events.kind)
    _, values, warm = feature_rows(data.events, ("depthimb_l5", "bookimb_l1"))
    assert warm[len(warm) // 2:].all() and np.isfinite(values[warm]).all()
    assert np.abs(values[warm, 0]).max() <= 1.0


def test_a_backtest_with_depth_events_replays_every_event(store):
    first, last = store_range(store, "binanceusdm", SYMBOL)
    data = load_replay(store, "binanceusdm", SYMBOL, first + 180 * 10**9, last + 1, warmup_s=180.0, depth=True)
    result = run_backtest(data, None, 10, EngineConfig(), VenueConfig(), BacktestConfig(), baselines=False)
    assert result.main.counts["events"] == data.window_events
    quotes = int((data.events.kind[data.start:] == KIND_QUOTE).sum())
    assert 0 < quotes < data.window_events
    assert np.isfinite(result.main.summary["net_pnl_usdt"])
