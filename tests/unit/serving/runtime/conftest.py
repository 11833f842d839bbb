"""A synthetic event stream (the product's simulator) and a tiny ensemble fitted on its features."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import SyntheticSourceConfig
from pipeline.features.check import synthetic_events
from pipeline.features.core import KIND_QUOTE, KIND_TRADE
from pipeline.features.events import EventArrays
from pipeline.models.base import make_model
from pipeline.models.ensemble import Ensemble
from serving.backtest.signals import feature_rows
from serving.config import EngineConfig
from serving.events import Quote, Trade

SYMBOL = "BTC/USDT:USDT"
MODEL_FEATURES = ("ret_tick_20", "bookimb_l1", "ofi_tick_100", "rv_tick_50", "rv_time_5s")
ROLES = tuple(EngineConfig().features.model_dump().values())
STRIDE = 10
TINY = {
    "forest": {"n_estimators": 8, "max_depth": 4},
    "xgb": {"n_estimators": 20, "early_stopping_rounds": 5, "max_depth": 3, "learning_rate": 0.2},
    "lstm": {"window": 4, "hidden": 4, "max_epochs": 2, "patience": 1, "batch_size": 128},
}


def market_events(events: EventArrays, symbol: str = SYMBOL) -> list[Quote | Trade]:
    """The stream as the daemon's feeds deliver it: Quote and Trade tuples of Python scalars."""
    out: list[Quote | Trade] = []
    columns = (events.ts_ns, events.kind, events.price, events.qty, events.side, events.bid, events.bid_qty,
               events.ask, events.ask_qty)  # fmt: skip
    for ts, kind, price, qty, side, bid, bid_qty, ask, ask_qty in zip(*(c.tolist() for c in columns)):
        if kind == KIND_QUOTE:
            out.append(Quote(symbol, ts, bid, bid_qty, ask, ask_qty))
        elif kind == KIND_TRADE:
            out.append(Trade(symbol, ts, price, qty, int(side)))
    return out


@pytest.fixture(scope="package")
def events() -> EventArrays:
    """Long enough for every role feature to warm (volspike_tick_50 waits for 10,002 trades)."""
    return synthetic_events(SyntheticSourceConfig(seed=5, ticks=45_000), SYMBOL)


@pytest.fixture(scope="package")
def ensemble(events) -> Ensemble:
    """Fitted on the sampled rows (the tests judge plumbing, not skill)."""
    _, values, warm = feature_rows(events, MODEL_FEATURES)
    X = values[warm][::3]
    y = (np.nan_to_num(np.diff(X[:, 0], append=0.0)) > 0).astype(np.int64)  # any 0/1 target will do
    split = int(len(X) * 0.7)
    members = {kind: make_model(kind, TINY.get(kind), seed=1).fit(X[:split], y[:split], X[split:], y[split:])
               for kind in ("logistic", "forest", "lstm", "xgb")}  # fmt: skip
    return Ensemble(members, feature_names=MODEL_FEATURES)
