"""The daemon's restart acts at the first market event, in its time (serving/daemon/loop.py): an order
resting from before the crash that this event fills does not find the engine's data stale (by the
downtime, or since event time 0 when the clock ticked before any data), which would put the kill
switch in REDUCING and close the resumed position; and that position's new stop is sent then."""

from __future__ import annotations

import time

import pytest

from serving.config import EngineConfig
from serving.daemon.config import ServeConfig
from serving.daemon.loop import Daemon
from serving.events import STOP, MarketLimits, Quote
from serving.runtime.telemetry import Telemetry
from serving.runtime.watcher import RecentTicks

NS = 1_000_000_000


class ListFeed:
    """A feed that connects (nothing on the first call: the daemon's clock ticks once), then has its
    events at once and ends."""

    def __init__(self, events) -> None:  # noqa: ANN001
        self._events, self.done, self.error, self._connected = list(events), False, "", False

    def drain(self, n: int) -> list:
        if not self._connected:
            self._connected = True
            return []
        out, self._events = self._events[:n], self._events[n:]
        self.done = not self._events
        return out

    def get(self, timeout_s: float) -> None:
        return None

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def stats(self) -> dict:
        return {}


class NoChampion:
    serving, alert = None, None

    def __init__(self) -> None:
        self.recent = RecentTicks(1000)

    def swap_ready(self) -> None:
        return None

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict:
        return {}


@pytest.mark.parametrize("position", [True, False])
def test_a_restart_acts_at_the_first_market_event(tmp_path, desk_class, position):
    desk = desk_class(tmp_path, latency_ms=5.0)
    # The crashed run's venue clock is an hour ahead of the wall clock (a run faster than real time),
    # and it died with a message in flight.
    desk.now = time.time_ns() + 3600 * NS
    symbol = desk.SYMBOL
    desk.quote(100.00, 100.02)
    if position:
        desk.trade(desk.market("old-1", 1, qty=1.0))
        desk.quote(100.00, 100.02, dt_ms=10)
        desk.trade(desk.stop("old-2", -1, 99.0, qty=1.0))
    desk.trade(desk.limit("old-3", 1, 99.50, qty=0.5))
    desk.quote(100.00, 100.02, dt_ms=10)
    desk.trade(desk.limit("old-4", -1, 101.00, qty=0.5))  # in flight at the crash

    # The market after the restart goes on from the venue's clock (serving/daemon/build.py): its first
    # quote fills old-3 before the cancels of the old orders arrive.
    first_ns = desk.broker.venue.now + 1
    quotes = [Quote(symbol, first_ns + k * 10_000_000, 99.40, 1.0, 99.42, 1.0) for k in range(20)]
    journal, broker = desk.restart().journal, desk.broker
    limits = MarketLimits(symbol, 125.0, 0.01, 0.001, 5.0)  # the desk's
    daemon = Daemon(ServeConfig(), EngineConfig(), symbol, limits, ListFeed(quotes), broker, journal, NoChampion(),
                    Telemetry([symbol]))  # fmt: skip
    daemon.run()

    assert [(f.client_id, f.ts_ns) for f in journal.fills_for("old-3")] == [("old-3", first_ns)]
    notes = [note for record in journal.decisions(1000) for note in record["notes"]]
    assert not [n for n in notes if "stale market data" in n], notes
    if position:
        restored = journal.order("as1-1")  # the new run's first order: the resumed position's stop, sent then
        assert restored.order.type == STOP and restored.order.reduce_only and restored.intent_ns == first_ns
