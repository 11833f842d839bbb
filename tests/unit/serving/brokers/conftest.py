"""A paper broker on a file, with helpers to send orders and market data in event time (zero latency and
no scheduled funding unless a test asks)."""

from __future__ import annotations

import math

import pytest

from serving.brokers.paper import PaperBroker
from serving.events import LIMIT, MARKET, STOP, Cancel, DecisionRecord, MarketLimits, Order, Quote, Trade
from serving.venues.config import ConstantLatency, FundingConfig, LatencyConfig, VenueConfig

SYMBOL = "BTC/USDT:USDT"
LIMITS = MarketLimits(SYMBOL, 125.0, 0.01, 0.001, 5.0)
T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
MS = 1_000_000


def venue_config(latency_ms: float = 0.0, **overrides) -> VenueConfig:
    latency = LatencyConfig(order=ConstantLatency(ms=latency_ms), market_data=ConstantLatency(ms=0.0))
    return VenueConfig(**{"latency": latency, "funding": FundingConfig(source="data"), **overrides})


def record(ts_ns: int, orders=(), cancels=()) -> DecisionRecord:
    return DecisionRecord(ts_ns, SYMBOL, "tick", (), (), 0.5, math.nan, True, "normal", "", math.nan, "active", "",
                          tuple(Cancel(c, SYMBOL) for c in cancels), tuple(orders), (), ())  # fmt: skip


class Paper:
    """A broker at ``path`` and event time; ``reopen`` drops the object without closing it (a kill -9:
    nothing is flushed) and opens the file again."""

    def __init__(self, path, config: VenueConfig | None = None, balance: float = 10_000.0) -> None:
        self.path, self.config, self.balance = path, config or venue_config(), balance
        self.broker = PaperBroker(path, self.config, [LIMITS], balance)
        self.now = T0

    def reopen(self) -> PaperBroker:
        self.broker = PaperBroker(self.path, self.config, [LIMITS], self.balance)
        return self.broker

    def quote(self, bid: float, ask: float, bid_qty: float = 1.0, ask_qty: float = 1.0, dt_ms: float = 1) -> list:
        self.now += int(dt_ms * MS)
        return self.broker.on_market(Quote(SYMBOL, self.now, bid, bid_qty, ask, ask_qty))

    def trade(self, price: float, qty: float, side: int, dt_ms: float = 1) -> list:
        self.now += int(dt_ms * MS)
        return self.broker.on_market(Trade(SYMBOL, self.now, price, qty, side))

    def send(self, *orders: Order, cancels: tuple[str, ...] = ()) -> list:
        return self.broker.submit(record(self.now, orders, cancels), self.now)


    # ---- orders ----

    SYMBOL, LIMITS, T0, MS = SYMBOL, LIMITS, T0, MS
    venue_config = staticmethod(venue_config)
    record = staticmethod(record)

    @staticmethod
    def order(client_id: str, side: int, kind: str = MARKET, price: float = 0.0, qty: float = 1.0,
              reduce_only: bool = False) -> Order:  # fmt: skip
        return Order(client_id, SYMBOL, side, kind, price, qty, kind == LIMIT, reduce_only, "test")

    @staticmethod
    def limit(client_id: str, side: int, price: float, qty: float = 1.0) -> Order:
        return Paper.order(client_id, side, LIMIT, price, qty)

    @staticmethod
    def stop(client_id: str, side: int, price: float, qty: float = 1.0) -> Order:
        return Paper.order(client_id, side, STOP, price, qty, reduce_only=True)


@pytest.fixture
def paper(tmp_path) -> Paper:
    return Paper(tmp_path / "paper.db")


@pytest.fixture
def paper_class() -> type[Paper]:
    """For tests that open their own (another path, latency, configuration)."""
    return Paper
