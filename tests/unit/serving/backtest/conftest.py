"""A small synthetic store (the product's simulator) and a tiny ensemble fitted on its features."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import QualityConfig, SyntheticSourceConfig
from pipeline.data.ingest import ingest
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.data.store import TickStore
from pipeline.models.base import make_model
from pipeline.models.ensemble import Ensemble
from serving.backtest.data import exchange_of, load_replay, store_range
from serving.backtest.signals import feature_rows

SYMBOL = "BTC/USDT:USDT"
MODEL_FEATURES = ("ret_tick_20", "bookimb_l1", "ofi_tick_100", "rv_tick_50")
STRIDE = 10
TINY = {
    "forest": {"n_estimators": 8, "max_depth": 4},
    "xgb": {"n_estimators": 20, "early_stopping_rounds": 5, "max_depth": 3, "learning_rate": 0.2},
    "lstm": {"window": 4, "hidden": 4, "max_epochs": 2, "patience": 1, "batch_size": 128},
}


@pytest.fixture(scope="package")
def store(tmp_path_factory) -> TickStore:
    store = TickStore(tmp_path_factory.mktemp("ticks"))
    ingest(SyntheticSource(SyntheticSourceConfig(seed=3, ticks=40_000), (SYMBOL,)), store, QualityConfig())
    return store


@pytest.fixture(scope="package")
def replay(store):
    exchange = exchange_of(store, SYMBOL)
    first, last = store_range(store, exchange, SYMBOL)
    start = first + (last - first) // 3  # the first third is warm-up history
    return load_replay(store, exchange, SYMBOL, start, last + 1, warmup_s=1e6)


@pytest.fixture(scope="package")
def ensemble(store) -> Ensemble:
    """Fitted on the sampled rows of the whole store (the tests judge plumbing, not skill)."""
    exchange = exchange_of(store, SYMBOL)
    first, last = store_range(store, exchange, SYMBOL)
    events = load_replay(store, exchange, SYMBOL, first, last + 1, 0.0).events
    _, values, warm = feature_rows(events, MODEL_FEATURES)
    X = values[warm][::STRIDE]
    mid = 0.5 * (events.bid + events.ask)
    y = (np.sign(np.nan_to_num(np.diff(X[:, 0], append=0.0))) > 0).astype(np.int64)  # any 0/1 target will do
    split = int(len(X) * 0.7)
    members = {kind: make_model(kind, TINY.get(kind), seed=1).fit(X[:split], y[:split], X[split:], y[split:])
               for kind in ("logistic", "forest", "lstm", "xgb")}  # fmt: skip
    assert np.isfinite(mid).any()
    return Ensemble(members, feature_names=MODEL_FEATURES)
