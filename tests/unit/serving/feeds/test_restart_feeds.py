"""Feeds for a restarted daemon: a replay never goes back in the paper venue's time (it continues
from the venue's clock, or plays the range again whole days later), hands the ticks before its start
to warm the model, and a restarted simulation goes on at the venue's last mid on another path."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pytest

from flows.config import ProductConfig
from pipeline.config import QualityConfig, SyntheticSourceConfig
from pipeline.data.ingest import ingest
from pipeline.data.schemas import FUNDING, Kind
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.data.store import TickStore
from serving.backtest.data import store_range
from serving.daemon.build import build_feed
from serving.events import Quote, Trade
from serving.feeds.base import CONNECTED, FeedStatus, MarkPrice
from serving.feeds.replay import NS_PER_DAY, ReplayFeed, resume_window
from serving.feeds.synthetic import SyntheticFeed

A = "BTC/USDT:USDT"
EX = "synthetic"
NS = 10**9
T0 = 1_800_000_000 * NS


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TickStore:
    store = TickStore(tmp_path_factory.mktemp("ticks"))
    ingest(SyntheticSource(SyntheticSourceConfig(seed=5, ticks=4_000), (A,)), store, QualityConfig())
    first, _ = store_range(store, EX, A)
    funding = pa.table({"ts_ns": [first + NS], "recv_ns": [None], "mark_px": [60_000.0], "index_px": [None],
                        "funding_rate": [1e-4], "next_funding_ns": [first + 3600 * NS]}, schema=FUNDING)  # fmt: skip
    with store.locked():
        store.write(EX, A, Kind.FUNDING, funding)
    return store


def collect(feed: Any, timeout_s: float = 30.0) -> list[Any]:
    events: list[Any] = []
    feed.start()
    deadline = time.monotonic() + timeout_s
    while not feed.done and time.monotonic() < deadline:
        event = feed.get(0.05)
        if event is not None:
            events.append(event)
    feed.stop()
    return events


def ticks(events: list[Any]) -> list[Any]:
    return [e for e in events if type(e) in (Quote, Trade)]


def test_resume_window_never_goes_back_in_the_venues_time() -> None:
    start, end = 10 * NS_PER_DAY + 5, 10 * NS_PER_DAY + 1_000
    assert resume_window(start, end, 0) == (start, end, 0)  # a fresh account
    assert resume_window(start, end, start) == (start, end, 0)
    assert resume_window(start, end, start + 400) == (start + 400, end, 0)  # a restart: go on from the clock
    # the account has lived through the whole range: the range again, whole days later (time of day kept)
    assert resume_window(start, end, end) == (start, end, NS_PER_DAY)
    assert resume_window(start, end, start + 3 * NS_PER_DAY + 1) == (start, end, 4 * NS_PER_DAY)


def test_a_shifted_replay_is_the_same_stream_whole_days_later(store: TickStore) -> None:
    first, last = store_range(store, EX, A)
    plain = collect(ReplayFeed(store, EX, A, first, last + 1, speed=None, funding=False))
    shifted = collect(ReplayFeed(store, EX, A, first, last + 1, speed=None, funding=False, shift_ns=2 * NS_PER_DAY))
    assert [e._replace(ts_ns=e.ts_ns + 2 * NS_PER_DAY) for e in ticks(plain)] == ticks(shifted)
    assert shifted[0].ts_ns == first + 2 * NS_PER_DAY and "2 day(s) later than stored" in shifted[0].detail


def test_history_is_the_stream_before_the_start(store: TickStore) -> None:
    first, last = store_range(store, EX, A)
    whole = ticks(collect(ReplayFeed(store, EX, A, first, last + 1, speed=None, funding=False)))
    middle = whole[len(whole) // 2].ts_ns
    before = [e for e in whole if e.ts_ns < middle]
    feed = ReplayFeed(store, EX, A, middle, last + 1, speed=None, shift_ns=NS_PER_DAY)
    assert feed.history(500) == [e._replace(ts_ns=e.ts_ns + NS_PER_DAY) for e in before[-500:]]
    assert feed.history(10**6) == [e._replace(ts_ns=e.ts_ns + NS_PER_DAY) for e in before]  # what there is
    assert feed.history(0) == []


def test_build_feed_starts_a_replay_at_the_paper_venues_clock(store: TickStore) -> None:
    config = ProductConfig()
    first, last = store_range(store, EX, A)
    serve = config.serve.model_copy(update={"feed": "replay", "speed": 0.0})
    clock = first + (last - first) // 2
    feed = build_feed(serve, config, A, None, store, not_before_ns=clock)
    assert (feed.start_ns, feed.end_ns, feed.shift_ns) == (clock, last + 1, 0)
    again = build_feed(serve, config, A, None, store, not_before_ns=last + 10)  # past the whole range
    assert (again.start_ns, again.shift_ns) == (first, NS_PER_DAY) and again.start_ns + again.shift_ns > last + 10


def test_a_restarted_simulation_goes_on_at_the_venues_mid_on_another_path(store: TickStore) -> None:
    config = ProductConfig()
    serve = config.serve.model_copy(update={"speed": 0.0})
    feed = build_feed(serve, config, A, None, store, not_before_ns=T0, run=3, last_mid=61_234.55)
    assert (feed.run, feed.start_price, feed.start_ns) == (3, 61_234.55, T0)
    first_run = ticks(collect(SyntheticFeed(A, seed=7, n_events=500, speed=None, start_ns=T0)))
    second = collect(SyntheticFeed(A, seed=7, n_events=500, speed=None, start_ns=T0, run=2))
    assert second[0] == FeedStatus(T0, None, CONNECTED, f"simulator seed 7 run 2: {A}")
    assert ticks(second) != first_run  # not the same moves again
    assert ticks(second) == ticks(collect(SyntheticFeed(A, seed=7, n_events=500, speed=None, start_ns=T0, run=2)))
    resumed = ticks(collect(SyntheticFeed(A, seed=7, n_events=200, speed=None, start_ns=T0, run=2,
                                          start_price=61_234.5)))  # fmt: skip
    quote = next(e for e in resumed if type(e) is Quote)
    assert abs((quote.bid + quote.ask) / 2 / 61_234.5 - 1) < 1e-3
    with pytest.raises(ValueError, match="start_price"):
        SyntheticFeed(A, start_price=0.0)


def test_the_exchange_feed_takes_its_options_from_serve_exchange_feed(store: TickStore) -> None:
    config = ProductConfig.model_validate({"serve": {"feed": "exchange", "queue_soft_limit": 1234,
                                                     "exchange_feed": {"depth": True, "stale_after_s": 3.0}}})  # fmt: skip
    feed = build_feed(config.serve, config, A, None, store)
    assert (feed.config.depth, feed.config.stale_after_s, feed.config.max_events) == (True, 3.0, 1234)
    with pytest.raises(ValueError, match="depth_rate_ms"):
        ProductConfig.model_validate({"serve": {"exchange_feed": {"depth_rate_ms": 7}}})


def test_marks_of_a_shifted_replay_move_with_it(store: TickStore) -> None:
    first, _ = store_range(store, EX, A)
    events = collect(ReplayFeed(store, EX, A, first, first + 2 * NS, speed=None, shift_ns=NS_PER_DAY))
    [mark] = [e for e in events if type(e) is MarkPrice]
    assert (mark.ts_ns, mark.next_funding_ns) == (first + NS + NS_PER_DAY, first + 3600 * NS + NS_PER_DAY)
