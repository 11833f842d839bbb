"""Helpers for the engine's tests: feature vectors by role, and a harness that closes the loop
through a toy venue (the real simulated venue belongs to the backtester)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.config import EngineConfig
from serving.engine import Engine
from serving.events import LIMIT, MARKET, Fill, MarketLimits, OrderDone, Quote
from serving.features import ROLES, TickView

SYMBOL = "BTC/USDT:USDT"
T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
MS = 1_000_000
LIMITS = MarketLimits(SYMBOL, 50.0, 0.01, 0.001, 5.0)  # a 1 bp tick at 100
MAKER_FEE, TAKER_FEE = 0.0002, 0.0005

# Quiet, unremarkable market: no strategy signal, normal regime.
NEUTRAL = {
    "rv_fast": 2e-5, "rv_slow": 2e-5, "atr": 1e-5, "rsi": 0.0, "bb_z": 0.0, "vwap_dev": 0.0,
    "vol_spike": 1.0, "momentum": 0.0, "ofi": 0.0, "book_imbalance": 0.0, "spread_rel": 1.7e-6,
    "efficiency": 0.2, "trend_strength": 0.0, "tick_vol": 0.2,
}  # fmt: skip
ROLE_NAMES = {role: getattr(EngineConfig().features, role) for role in ROLES}
# The feature engine's vector: the roles in a different order, among other features.
NAMES = ["extra_a", *reversed(ROLE_NAMES.values()), "extra_b"]


def features(**roles: float) -> np.ndarray:
    values = {**NEUTRAL, **roles}
    unknown = set(roles) - set(NEUTRAL)
    assert not unknown, unknown
    by_name = {ROLE_NAMES[role]: value for role, value in values.items()}
    return np.array([by_name.get(name, 0.5) for name in NAMES], dtype=np.float64)


def view(bid: float = 100.0, ask: float = 100.01, p_up: float = 0.5, predicted_move: float = math.nan,
         bid_qty: float = 1.0, ask_qty: float = 1.0, tick: float = 0.01, **roles: float) -> TickView:  # fmt: skip
    v = TickView()
    v.bid, v.ask, v.bid_qty, v.ask_qty = bid, ask, bid_qty, ask_qty
    v.mid = (bid + ask) / 2
    v.microprice = (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty)
    v.tick_size, v.p_up, v.predicted_move = tick, p_up, predicted_move
    v.set_features([{**NEUTRAL, **roles}[role] for role in ROLES])
    return v


class ToyVenue:
    """Binance-like enough: post-only limits that would cross are rejected, reduce-only orders never
    flip a position (cut to it, or rejected), stops that would trigger at once are rejected,
    market orders fill at the touch, resting orders fill when the book trades through them.
    Cancels are confirmed at once, or with ``cancel_lag`` at the next ``flush()`` or after
    ``LAG_MS`` of event time (well inside the engine's cancel timeout): until then the order can
    still fill, as a real cancel can race a fill."""

    LAG_MS = 1_000

    def __init__(self, cancel_lag: bool = False) -> None:
        self.cancel_lag = cancel_lag
        self.cancelling: list = []
        self.working: dict[str, object] = {}
        self.position: dict[str, float] = {}
        self.quote: dict[str, Quote] = {}
        self.ts = 0

    def on_quote(self, quote: Quote) -> list:
        self.quote[quote.symbol], self.ts = quote, quote.ts_ns
        events = []
        if self.cancelling and self.cancelling[0][0] <= self.ts - self.LAG_MS * MS:
            events += self.flush()
        for cid, o in list(self.working.items()):
            if o.symbol != quote.symbol:
                continue
            if o.type == LIMIT:
                if (quote.ask <= o.price) if o.side > 0 else (quote.bid >= o.price):
                    events += self._fill(o, o.price, MAKER_FEE)
            elif (quote.ask >= o.price) if o.side > 0 else (quote.bid <= o.price):  # a stop triggers
                events += self._fill(o, quote.ask if o.side > 0 else quote.bid, TAKER_FEE)
        return events

    def accept(self, record) -> list:
        events = []
        if self.cancel_lag:
            self.cancelling += [(self.ts, c) for c in record.cancels]
        else:
            events += self._cancel(record.cancels)
        for o in record.orders:
            quote = self.quote.get(o.symbol)
            if quote is None:
                events.append(OrderDone(o.symbol, self.ts, o.client_id, "rejected"))
            elif o.type == MARKET:
                events += self._fill(o, quote.ask if o.side > 0 else quote.bid, TAKER_FEE)
            elif o.type == LIMIT and o.post_only and ((o.price >= quote.ask) if o.side > 0 else (o.price <= quote.bid)):
                events.append(OrderDone(o.symbol, self.ts, o.client_id, "rejected"))
            elif o.type not in (MARKET, LIMIT) and ((quote.ask >= o.price) if o.side > 0 else (quote.bid <= o.price)):
                events.append(OrderDone(o.symbol, self.ts, o.client_id, "rejected"))  # would trigger at once
            else:
                self.working[o.client_id] = o
        return events

    def flush(self) -> list:
        """Confirm the cancels in flight."""
        cancels, self.cancelling = self.cancelling, []
        return self._cancel(c for _, c in cancels)

    def _cancel(self, cancels) -> list:
        return [OrderDone(c.symbol, self.ts, c.client_id, "cancelled") for c in cancels
                if self.working.pop(c.client_id, None) is not None]  # fmt: skip

    def _fill(self, o, price: float, fee: float) -> list:
        self.working.pop(o.client_id, None)
        held = self.position.get(o.symbol, 0.0)
        qty = o.qty
        if o.reduce_only:
            qty = min(qty, abs(held)) if held * o.side < 0 else 0.0
            if qty <= 0.0:
                return [OrderDone(o.symbol, self.ts, o.client_id, "rejected")]
        self.position[o.symbol] = round(held + o.side * qty, 9)
        return [Fill(o.symbol, self.ts, o.client_id, price, qty, o.side, price * qty * fee)]


class Harness:
    """An engine and a toy venue in event time; every record is kept in ``records``. The class also
    carries the helpers, since test modules cannot import conftest: ``harness.view(...)``."""

    SYMBOL, T0, MS, LIMITS, NEUTRAL, NAMES = SYMBOL, T0, MS, LIMITS, NEUTRAL, NAMES
    features = staticmethod(features)
    view = staticmethod(view)
    Venue = ToyVenue

    def __init__(self, config: EngineConfig | None = None, equity: float = 10_000.0, limits=(LIMITS,),
                 cancel_lag: bool = False) -> None:  # fmt: skip
        self.engine = Engine(config or EngineConfig(), NAMES, list(limits), equity)
        self.venue = ToyVenue(cancel_lag)
        self.records: list = []
        self.now = T0
        self.on_record = None  # called with (harness, record) as the engine returns it, before the venue acts

    def tick(self, bid: float, ask: float | None = None, *, dt_ms: int = 100, p_up: float = 0.5,
             predicted_move: float = math.nan, model_ok: bool = True, symbol: str = SYMBOL,
             bid_qty: float = 2.0, ask_qty: float = 2.0, **roles: float) -> list:  # fmt: skip
        self.now += dt_ms * MS
        quote = Quote(symbol, self.now, bid, bid_qty, round(bid + 0.01, 2) if ask is None else ask, ask_qty)
        out: list = []
        for event in self.venue.on_quote(quote):
            self.feed(self._deliver(event), out)
        self.feed(self.engine.on_tick(quote, features(**roles), p_up, predicted_move, model_ok), out)
        return out

    def clock(self, dt_ms: int) -> list:
        self.now += dt_ms * MS
        out: list = []
        self.feed(self.engine.on_clock(self.now), out)
        return out

    def flush(self) -> list:
        out: list = []
        for event in self.venue.flush():
            self.feed(self._deliver(event), out)
        return out

    def feed(self, record, out: list) -> None:
        """Hand a record to the venue and the venue's answers back to the engine, one at a time."""
        if record is None:
            return
        out.append(record)
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(self, record)
        for event in self.venue.accept(record):
            self.feed(self._deliver(event), out)

    def _deliver(self, event):
        return self.engine.on_fill(event) if isinstance(event, Fill) else self.engine.on_order_done(event)

    @property
    def position(self) -> float:
        return self.engine.symbols[SYMBOL].position.qty

    def orders(self, records=None) -> list:
        return [o for r in (self.records if records is None else records) for o in r.orders]


@pytest.fixture(scope="session")
def harness():
    """The Harness class (stateless, so one per session): ``harness(config, equity, limits, cancel_lag)``."""
    return Harness
