"""LoopedReplayFeed: a recorded stream over and over, event time increasing across laps, paced in
wall time, every event the buffer took counted by kind."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from pipeline.data.schemas import QUOTES, TRADES
from pipeline.features.events import merge_events
from serving.events import Quote, Trade
from serving.feeds.base import CONNECTED, ENDED, FeedStatus
from serving.feeds.looped import LoopedReplayFeed

SYMBOL = "BTC/USDT:USDT"
T0 = 1_723_161_000 * 10**9
NS = 10**9


def stream():  # noqa: ANN201
    """Two quotes and two trades over one second."""
    quotes = pa.table({"ts_ns": [T0, T0 + NS // 2], "recv_ns": [T0, T0 + NS // 2], "update_id": [1, 2],
                       "bid_px": [100.0, 100.1], "bid_qty": [1.0, 2.0], "ask_px": [100.2, 100.3],
                       "ask_qty": [3.0, 4.0]}, schema=QUOTES)  # fmt: skip
    trades = pa.table({"ts_ns": [T0 + NS // 4, T0 + NS], "recv_ns": [T0 + NS // 4, T0 + NS], "trade_id": [7, 8],
                       "price": [100.2, 100.1], "qty": [0.5, 0.25], "side": [1, -1], "exec_type": [None, None]},
                      schema=TRADES)  # fmt: skip
    return merge_events(trades, quotes)


def drain(feed: LoopedReplayFeed, timeout_s: float = 10.0) -> list:
    out, deadline = [], time.monotonic() + timeout_s
    while not feed.done and time.monotonic() < deadline:
        out += feed.drain(10_000) or ([e] if (e := feed.get(timeout_s=0.01)) is not None else [])
    return out


def test_laps_keep_event_time_increasing_and_every_event_is_counted():
    feed = LoopedReplayFeed(SYMBOL, stream(), speed=1_000.0, duration_s=0.05, start_ns=T0 + 3600 * NS)
    feed.start()
    events = drain(feed)
    statuses = [e.state for e in events if type(e) is FeedStatus]
    ticks = [e for e in events if type(e) is not FeedStatus]
    assert statuses == [CONNECTED, ENDED]
    assert feed.laps >= 5  # a lap is 1 s of event time: 1 ms of wall time at x1000
    assert ticks[0] == Quote(SYMBOL, T0 + 3600 * NS, 100.0, 1.0, 100.2, 3.0)
    assert ticks[1] == Trade(SYMBOL, T0 + 3600 * NS + NS // 4, 100.2, 0.5, 1)
    ts = [e.ts_ns for e in ticks]
    assert all(b > a for a, b in zip(ts, ts[1:]))  # laps are 1 s + 1 ms apart: no time goes back
    assert ticks[4].ts_ns - ticks[0].ts_ns == NS + 1_000_000
    kinds = [type(e) for e in ticks]
    assert feed.offered == {"quotes": kinds.count(Quote), "trades": kinds.count(Trade)}
    assert feed.stats()["dropped"] == 0


def test_pacing_follows_the_wall_clock():
    feed = LoopedReplayFeed(SYMBOL, stream(), speed=10.0, duration_s=0.3)  # 0.1 s of wall time a lap
    started = time.monotonic()
    feed.start()
    ticks = [e for e in drain(feed) if type(e) is not FeedStatus]
    assert 0.25 <= time.monotonic() - started < 2.0
    assert 8 <= len(ticks) <= 14  # ~3 laps of 4 events


def test_priming_events_go_first_unpaced_then_the_paced_run():
    feed = LoopedReplayFeed(SYMBOL, stream(), speed=1.0, duration_s=0.3, prime_events=10)  # a lap: 1 s paced
    started = time.monotonic()
    feed.start()
    ticks = [e for e in drain(feed) if type(e) is not FeedStatus]
    assert feed.primed.is_set() and time.monotonic() - started < 2.0
    assert len(ticks) == 10 + 1  # 10 at once (2.5 laps), then one paced event in 0.3 s
    ts = [e.ts_ns for e in ticks]
    assert all(b > a for a, b in zip(ts, ts[1:]))


def test_a_bad_speed_is_refused():
    with pytest.raises(ValueError, match="speed"):
        LoopedReplayFeed(SYMBOL, stream(), speed=0.0)
