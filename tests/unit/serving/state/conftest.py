"""A journal and a paper broker driven the daemon's way: journal before sending, send, journal after."""

from __future__ import annotations

import math

import pytest

from serving.brokers.paper import PaperBroker
from serving.events import LIMIT, MARKET, STOP, Cancel, DecisionRecord, Fill, MarketLimits, Order, OrderDone, Quote
from serving.state.journal import Journal
from serving.venues.config import ConstantLatency, FundingConfig, LatencyConfig, VenueConfig

SYMBOL = "BTC/USDT:USDT"
LIMITS = MarketLimits(SYMBOL, 125.0, 0.01, 0.001, 5.0)
T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
MS = 1_000_000


def venue_config(latency_ms: float = 0.0) -> VenueConfig:
    latency = LatencyConfig(order=ConstantLatency(ms=latency_ms), market_data=ConstantLatency(ms=0.0))
    return VenueConfig(latency=latency, funding=FundingConfig(source="data"))


class Desk:
    """The daemon's order of writes around a broker, without the engine: the test decides. ``book``
    journals the venue's events and the position as the engine would believe it (the venue's)."""

    SYMBOL, T0, MS = SYMBOL, T0, MS

    def __init__(self, folder, latency_ms: float = 0.0) -> None:
        self.folder, self.config = folder, venue_config(latency_ms)
        self.journal = Journal(folder / "journal.db")
        self.broker = PaperBroker(folder / "paper.db", self.config, [LIMITS], 10_000.0)
        self.now = max(T0, self.broker.venue.now)  # an existing account goes on from its time

    def restart(self) -> Desk:
        """A kill -9 and a start: both files opened again, nothing closed or flushed before."""
        self.journal = Journal(self.folder / "journal.db")
        self.broker = PaperBroker(self.folder / "paper.db", self.config, [LIMITS], 10_000.0)
        return self

    # ---- the daemon's steps, each of which a crash may interrupt ----

    def record(self, *orders: Order, cancels: tuple[str, ...] = ()) -> DecisionRecord:
        return DecisionRecord(self.now, SYMBOL, "tick", (), (), 0.5, math.nan, True, "normal", "test", math.nan,
                              "active", "", tuple(Cancel(c, SYMBOL) for c in cancels), orders, (), ())  # fmt: skip

    def decide(self, *orders: Order, cancels: tuple[str, ...] = ()) -> DecisionRecord:
        record = self.record(*orders, cancels=cancels)
        self.journal.decision(record)
        return record

    def send(self, record: DecisionRecord) -> list:
        return self.broker.submit(record, record.ts_ns)

    def sent(self, record: DecisionRecord, events: list) -> None:
        self.journal.sent([o.client_id for o in record.orders], record.ts_ns)
        self.book(events)

    def trade(self, *orders: Order, cancels: tuple[str, ...] = ()) -> list:
        """All three steps."""
        return self.run(self.record(*orders, cancels=cancels))

    def run(self, record: DecisionRecord) -> list:
        """All three steps for a record made elsewhere (the reconciliation's)."""
        self.journal.decision(record)
        events = self.send(record)
        self.sent(record, events)
        return events

    def quote(self, bid: float, ask: float, bid_qty: float = 1.0, ask_qty: float = 1.0, dt_ms: float = 1,
              journal: bool = True) -> list:  # fmt: skip
        """A market event; ``journal=False``: the daemon is down (or died before booking)."""
        self.now += int(dt_ms * MS)
        events = self.broker.on_market(Quote(SYMBOL, self.now, bid, bid_qty, ask, ask_qty))
        if journal:
            self.book(events)
        return events

    def book(self, events) -> None:
        for event in events:
            if type(event) is Fill:
                self.journal.fill(event)
                held = self.broker.positions().get(SYMBOL)
                qty, entry = (held.qty, held.entry_px) if held is not None else (0.0, 0.0)
                self.journal.position(SYMBOL, qty, entry, math.nan, event.ts_ns)
            elif type(event) is OrderDone:
                self.journal.order_done(event)

    # ---- orders ----

    @staticmethod
    def market(client_id: str, side: int, qty: float = 1.0, reduce_only: bool = False) -> Order:
        return Order(client_id, SYMBOL, side, MARKET, 0.0, qty, False, reduce_only, "test")

    @staticmethod
    def limit(client_id: str, side: int, price: float, qty: float = 1.0) -> Order:
        return Order(client_id, SYMBOL, side, LIMIT, price, qty, True, False, "test")

    @staticmethod
    def stop(client_id: str, side: int, price: float, qty: float = 1.0) -> Order:
        return Order(client_id, SYMBOL, side, STOP, price, qty, False, True, "risk")


@pytest.fixture
def desk(tmp_path) -> Desk:
    return Desk(tmp_path)


@pytest.fixture
def desk_class() -> type[Desk]:
    return Desk
