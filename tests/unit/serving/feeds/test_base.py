"""The event buffer between a feed's producer thread and the daemon: conflation of book state,
trades and statuses never dropped, the bound, blocking producers, and the Feed thread contract."""

from __future__ import annotations

import threading
import time

import numpy as np

from pipeline.features.l2book import NO_ID, DepthUpdate, L2Book
from serving.events import Quote, Trade
from serving.feeds.base import ENDED, FAILED, DepthEvent, EventBuffer, Feed, FeedStatus, MarkPrice, merge_diffs

A, B, C = "BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"


def quote(symbol: str, ts: int, bid: float = 100.0) -> Quote:
    return Quote(symbol, ts, bid, 1.0, bid + 0.1, 1.0)


def trade(symbol: str, ts: int) -> Trade:
    return Trade(symbol, ts, 100.0, 0.5, 1)


def diff(first: int, last: int, prev: int, levels: list[tuple[int, float, float]], symbol: str = A) -> DepthEvent:
    side, price, qty = (np.array(c, dtype=t) for c, t in zip(zip(*levels, strict=True), (np.int8, float, float)))
    return DepthEvent(symbol, last, DepthUpdate(last, last, False, side, price, qty, first, prev))


def snapshot(last: int, levels: list[tuple[int, float, float]]) -> DepthEvent:
    side, price, qty = (np.array(c, dtype=t) for c, t in zip(zip(*levels, strict=True), (np.int8, float, float)))
    return DepthEvent(A, last, DepthUpdate(last, last, True, side, price, qty))


def test_below_the_bound_everything_is_kept_in_order() -> None:
    buffer = EventBuffer(max_events=10)
    events = [quote(A, 1), quote(A, 2), trade(A, 3), quote(B, 4)]
    for event in events:
        assert buffer.put(event)
    assert buffer.drain() == events
    assert buffer.stats() == {"received": 4, "delivered": 4, "conflated": 0, "dropped": 0, "queue_depth": 0,
                              "max_queue_depth": 4}  # fmt: skip


def test_when_full_the_newest_quote_of_a_symbol_replaces_the_waiting_one_at_the_back() -> None:
    buffer = EventBuffer(max_events=3)
    for event in (quote(A, 1), quote(B, 2), trade(A, 3)):
        buffer.put(event)
    buffer.put(quote(A, 4))  # full: A's waiting quote (ts 1) goes, the new one queues behind the trade
    buffer.put(quote(A, 5))  # and replaces that one
    buffer.put(quote(C, 6))  # no quote of C waiting: queued (one over the bound per symbol)
    mark = MarkPrice(A, 7, 100.0, 100.0, 1e-4, None)
    buffer.put(mark)
    buffer.put(mark._replace(ts_ns=8))  # mark prices conflate the same way
    assert len(buffer) == 5
    assert buffer.drain() == [quote(B, 2), trade(A, 3), quote(A, 5), quote(C, 6), mark._replace(ts_ns=8)]
    assert buffer.stats()["conflated"] == 3 and buffer.stats()["dropped"] == 0


def test_trades_and_statuses_are_never_dropped_nor_merged() -> None:
    buffer = EventBuffer(max_events=2)
    events = [trade(A, ts) for ts in range(50)] + [FeedStatus(50, A, "stale", "x")] * 3
    for event in events:
        buffer.put(event)
    assert len(buffer) == 53 and buffer.drain(1000) == events
    assert buffer.stats()["conflated"] == 0


def test_a_producer_ten_times_faster_keeps_trades_and_the_newest_quotes_within_the_bound() -> None:
    buffer = EventBuffer(max_events=100)
    symbols = (A, B, C)
    n = 20_000
    trades_put: list[Trade] = []
    got: list = []

    def produce() -> None:
        for i in range(n):
            if i % 20 == 0:
                event = trade(symbols[i % 3], i)
                trades_put.append(event)
            else:
                event = quote(symbols[i % 3], i, bid=float(i))
            buffer.put(event)
        buffer.put(FeedStatus(n, None, ENDED, ""))

    producer = threading.Thread(target=produce)
    started = time.perf_counter()
    producer.start()
    while not (got and type(got[-1]) is FeedStatus):
        event = buffer.get(1.0)
        assert event is not None
        got.append(event)
        time.sleep(2e-5)  # the daemon's work on one event: the producer is >10x faster
    producer.join()
    assert time.perf_counter() - started < 30
    stats = buffer.stats()
    assert stats["received"] == n + 1 and stats["delivered"] == len(got) < n / 3  # most quotes conflated
    assert [e for e in got if type(e) is Trade] == trades_put  # every trade, in order
    assert stats["dropped"] == 0 and stats["conflated"] == n + 1 - len(got)
    # the bound: max_events, one waiting quote per symbol, and the trades that came while it was full
    assert stats["max_queue_depth"] <= 100 + len(symbols) + len(trades_put)
    assert stats["max_queue_depth"] < 0.1 * n
    ts = [e.ts_ns for e in got[:-1]]
    assert ts == sorted(ts)  # still in arrival order
    for symbol in symbols:  # the newest quote of each symbol reaches the daemon
        last = max(i for i in range(n) if i % 20 and symbols[i % 3] == symbol)
        assert [e for e in got if type(e) is Quote and e.symbol == symbol][-1].ts_ns == last


def test_chained_depth_diffs_merge_into_one_that_leaves_the_same_book() -> None:
    base = snapshot(10, [(1, 99.0, 1.0), (1, 98.0, 2.0), (-1, 101.0, 1.0), (-1, 102.0, 3.0)])
    d1 = diff(9, 11, 10, [(1, 99.0, 1.5), (-1, 101.0, 0.0)])
    d2 = diff(12, 12, 11, [(1, 99.0, 0.7), (1, 99.5, 0.2), (-1, 103.0, 4.0)])
    d3 = diff(14, 15, 13, [(1, 97.0, 1.0)])  # does not chain (pu 13 != 12): kept apart
    buffer = EventBuffer(max_events=1)
    for event in (base, d1, d2, d3):
        buffer.put(event)
    out = buffer.drain()
    assert [e.update.update_id for e in out] == [10, 12, 15] and buffer.stats()["conflated"] == 1
    merged = out[1].update
    assert (merged.first_update_id, merged.update_id, merged.prev_update_id) == (9, 12, 10)
    one, two = L2Book(), L2Book()
    for update in (base.update, d1.update, d2.update):
        one.apply(update)
    for event in out[:2]:
        two.apply(event.update)
    assert np.array_equal(one.keys, two.keys) and np.array_equal(one.sizes, two.sizes) and two.valid
    assert merge_diffs(d1, d2).update.ts_ns == d2.ts_ns
    # a diff never merges into a waiting snapshot
    buffer = EventBuffer(max_events=1)
    buffer.put(base)
    buffer.put(d1)
    assert len(buffer) == 2 and buffer.stats()["conflated"] == 0
    # spot diffs (no pu) chain by U = u + 1
    s1 = diff(11, 11, NO_ID, [(1, 99.0, 1.0)])
    s2 = diff(12, 13, NO_ID, [(1, 98.0, 1.0)])
    buffer = EventBuffer(max_events=1)
    buffer.put(s1)
    buffer.put(s2)
    (spot,) = buffer.drain()
    assert (spot.update.first_update_id, spot.update.update_id, spot.update.prev_update_id) == (11, 13, NO_ID)


def test_put_wait_blocks_while_full_and_stop_releases_it() -> None:
    buffer = EventBuffer(max_events=2)
    stop = threading.Event()
    buffer.put(quote(A, 1))
    buffer.put(quote(A, 2))
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(buffer.put_wait(quote(A, 3), stop)))
    waiter.start()
    time.sleep(0.1)
    assert not results and len(buffer) == 2  # waiting, nothing conflated
    assert buffer.get() == quote(A, 1)
    waiter.join(1.0)
    assert results == [True] and buffer.drain() == [quote(A, 2), quote(A, 3)]
    buffer.put(quote(A, 4))
    buffer.put(quote(A, 5))
    waiter = threading.Thread(target=lambda: results.append(buffer.put_wait(quote(A, 6), stop)))
    waiter.start()
    stop.set()
    waiter.join(1.0)
    assert results == [True, False] and buffer.stats()["conflated"] == 0


def test_get_waits_for_an_event_and_close_wakes_it() -> None:
    buffer = EventBuffer()
    started = time.monotonic()
    assert buffer.get(0.05) is None and time.monotonic() - started >= 0.04
    threading.Timer(0.05, lambda: buffer.put(trade(A, 1))).start()
    assert buffer.get(2.0) == trade(A, 1)
    threading.Timer(0.05, buffer.close).start()
    started = time.monotonic()
    assert buffer.get(None) is None and time.monotonic() - started < 1.0
    assert not buffer.put(trade(A, 2)) and buffer.stats()["dropped"] == 1


class Broken(Feed):
    name = "broken"

    def _produce(self) -> None:
        self.emit(trade(A, 1))
        raise ValueError("bad tick file")


def test_a_failing_producer_reports_failed_and_keeps_what_it_produced() -> None:
    feed = Broken(clock_ns=lambda: 42)
    feed.start()
    feed._thread.join(2.0)  # type: ignore[union-attr]
    assert feed.drain() == [trade(A, 1), FeedStatus(42, None, FAILED, "ValueError: bad tick file")]
    assert feed.error == "ValueError: bad tick file" and feed.stats()["errors"] == 1 and feed.done
    feed.stop()
