"""A simulated venue on a clock, with helpers to send market data and orders (zero latency and no
scheduled funding unless a test asks: each test sees only the effect it is about)."""

from __future__ import annotations

import math

import pytest

from serving.events import LIMIT, MARKET, STOP, Cancel, DecisionRecord, MarketLimits, Order, Quote, Trade
from serving.venues.config import ConstantLatency, FundingConfig, LatencyConfig, VenueConfig
from serving.venues.simulated import SimulatedVenue

SYMBOL = "BTC/USDT:USDT"
LIMITS = MarketLimits(SYMBOL, 125.0, 0.01, 0.001, 5.0)  # a 1 bp tick at 100
T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
MS = 1_000_000
INSTANT = LatencyConfig(order=ConstantLatency(ms=0.0), market_data=ConstantLatency(ms=0.0))


def venue_config(**overrides) -> VenueConfig:
    settings = {"latency": INSTANT, "funding": FundingConfig(source="data"), **overrides}
    return VenueConfig(**settings)


def record(orders=(), cancels=(), leverage: float = math.nan, ts_ns: int = T0) -> DecisionRecord:
    return DecisionRecord(ts_ns, SYMBOL, "tick", (), (), 0.5, math.nan, True, "normal", "", leverage, "active", "",
                          tuple(cancels), tuple(orders), (), ())  # fmt: skip


class Sim:
    """A venue and event time. ``quote``/``trade`` move the clock by ``dt_ms`` first."""

    SYMBOL, T0, MS, LIMITS = SYMBOL, T0, MS, LIMITS
    config = staticmethod(venue_config)

    def __init__(self, config: VenueConfig | None = None, balance: float = 10_000.0) -> None:
        self.venue = SimulatedVenue(config or venue_config(), [LIMITS], balance)
        self.now = T0
        self._seq = 0

    def quote(self, bid: float, ask: float, bid_qty: float = 1.0, ask_qty: float = 1.0, dt_ms: float = 1) -> list:
        self.now += int(dt_ms * MS)
        return list(self.venue.on_quote(Quote(SYMBOL, self.now, bid, bid_qty, ask, ask_qty)))

    def trade(self, price: float, qty: float, side: int, dt_ms: float = 1) -> list:
        self.now += int(dt_ms * MS)
        return list(self.venue.on_trade(Trade(SYMBOL, self.now, price, qty, side)))

    def advance(self, dt_ms: float) -> list:
        self.now += int(dt_ms * MS)
        return list(self.venue.advance(self.now))

    def send(self, *orders: Order, cancels: tuple[str, ...] = (), leverage: float = math.nan) -> list:
        cancels = tuple(Cancel(cid, SYMBOL) for cid in cancels)
        return list(self.venue.submit(record(orders, cancels, leverage, self.now), self.now))

    def order(self, side: int, kind: str = MARKET, price: float = 0.0, qty: float = 1.0, post_only: bool | None = None,
              reduce_only: bool = False, client_id: str | None = None) -> Order:  # fmt: skip
        self._seq += 1
        post_only = kind == LIMIT if post_only is None else post_only
        return Order(client_id or f"o{self._seq}", SYMBOL, side, kind, price, qty, post_only, reduce_only, "test")

    def limit(self, side: int, price: float, qty: float = 1.0, **kw) -> Order:
        return self.order(side, LIMIT, price, qty, **kw)

    def stop(self, side: int, price: float, qty: float = 1.0, reduce_only: bool = True) -> Order:
        return self.order(side, STOP, price, qty, reduce_only=reduce_only)

    def resting(self, client_id: str):
        """The venue's resting order (for its queue position)."""
        return self.venue._working[client_id][1]

    @property
    def position(self) -> float:
        return self.venue.position(SYMBOL).qty


@pytest.fixture(scope="session")
def sim():
    """The Sim class: ``sim(config, balance)``; ``sim.config(**overrides)`` builds a config."""
    return Sim
