"""SyntheticFeed: the simulator as a live feed, deterministic by seed, starting at the wall clock."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pipeline.data.sources.synthetic import simulate, symbol_seed
from serving.events import Quote, Trade
from serving.feeds.base import CONNECTED, ENDED, FeedStatus
from serving.feeds.synthetic import SyntheticFeed

A, B = "BTC/USDT:USDT", "ETH/USDT:USDT"
T0 = 1_800_000_000 * 10**9


def run(feed: SyntheticFeed, limit: int | None = None, timeout_s: float = 30.0) -> list[Any]:
    events: list[Any] = []
    feed.start()
    deadline = time.monotonic() + timeout_s
    while not feed.done and time.monotonic() < deadline and (limit is None or len(events) < limit):
        event = feed.get(0.05)
        if event is not None:
            events.append(event)
    feed.stop()
    return events


def test_a_seed_gives_the_same_events_every_run() -> None:
    one = run(SyntheticFeed([A, B], seed=11, n_events=3_000, speed=None, chunk_events=1_000, start_ns=T0))
    two = run(SyntheticFeed([A, B], seed=11, n_events=3_000, speed=None, chunk_events=1_000, start_ns=T0))
    other = run(SyntheticFeed([A, B], seed=12, n_events=3_000, speed=None, chunk_events=1_000, start_ns=T0))
    assert one == two and one != other
    assert one[0] == FeedStatus(T0, None, CONNECTED, f"simulator seed 11: {A}, {B}") and one[-1].state == ENDED
    ticks = one[1:-1]
    assert len(ticks) == 6_000 and {e.symbol for e in ticks} == {A, B}
    assert all(type(e) in (Quote, Trade) for e in ticks)
    ts = [e.ts_ns for e in ticks]
    assert ts == sorted(ts) and ts[0] > T0


def test_the_first_chunk_is_the_simulator_stream_and_chunks_continue_it() -> None:
    events = run(SyntheticFeed(A, seed=3, n_events=4_000, speed=None, chunk_events=1_000, start_ns=T0))
    ticks = [e for e in events if type(e) in (Quote, Trade)]
    trades, quotes = simulate(symbol_seed(3, A), 1_000, T0, 60_000.0, 0.1)
    first_quotes = [e for e in ticks[:1_000] if type(e) is Quote]
    assert [q.bid for q in first_quotes] == quotes[3].tolist() and [q.ts_ns for q in first_quotes] == quotes[0].tolist()
    assert [t.price for t in ticks[:1_000] if type(t) is Trade] == trades[3].tolist()
    ts = np.array([e.ts_ns for e in ticks])
    assert (np.diff(ts) >= 0).all()
    mids = [(q.bid + q.ask) / 2 for q in ticks if type(q) is Quote]
    jumps = np.abs(np.diff(np.log(mids)))
    assert jumps.max() < 0.005  # no jump where one chunk hands over to the next


def test_real_time_data_is_fresh_and_an_endless_feed_stops() -> None:
    feed = SyntheticFeed(A, seed=1, speed=1.0)  # starts at the wall clock, no end
    arrivals: list[tuple[Any, int]] = []
    feed.start()
    deadline = time.monotonic() + 20
    while len(arrivals) < 25 and time.monotonic() < deadline:
        event = feed.get(0.05)
        if event is not None:
            arrivals.append((event, time.time_ns()))
    started = time.monotonic()
    feed.stop()
    assert time.monotonic() - started < 1.0 and not feed.running
    ticks = [(e, t) for e, t in arrivals if type(e) in (Quote, Trade)]
    assert len(ticks) >= 20
    lags_ms = [(t - e.ts_ns) / 1e6 for e, t in ticks]
    assert min(lags_ms) > -2.0  # never before its event time (the wall clock)
    assert np.median(lags_ms) < 50.0  # fresh
    assert feed.stats()["dropped"] == 0
    feed.drain(10**6)
    assert feed.done
