"""ReplayFeed: the store's ticks in merge_events order, paced or as fast as the daemon drains,
with the source's anomalies passed through and counted; raw depth that leaves an online book equal
to the batch replay's."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import QualityConfig, SyntheticSourceConfig
from pipeline.data.ingest import ingest
from pipeline.data.schemas import FUNDING, QUOTES, TRADES, Kind
from pipeline.data.sources.files import FileSource
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.data.store import TickStore
from pipeline.features.core import KIND_DEPTH, KIND_QUOTE, KIND_TRADE
from pipeline.features.events import merge_events
from pipeline.features.l2book import L2Book
from serving.backtest.data import NoReplayDataError, depth_rows, store_range
from serving.events import Quote, Trade
from serving.feeds.base import CONNECTED, ENDED, DepthEvent, FeedStatus, MarkPrice
from serving.feeds.replay import ReplayFeed

A, B = "BTC/USDT:USDT", "ETH/USDT:USDT"
EX = "synthetic"
NS = 10**9


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TickStore:
    store = TickStore(tmp_path_factory.mktemp("ticks"))
    ingest(SyntheticSource(SyntheticSourceConfig(seed=5, ticks=6_000), (A, B)), store, QualityConfig())
    first, _ = store_range(store, EX, A)
    funding = pa.table(
        {"ts_ns": [first + 30 * NS, first + 90 * NS], "recv_ns": [None, None], "mark_px": [60_000.0, 60_010.0],
         "index_px": [59_990.0, None], "funding_rate": [1e-4, 2e-4], "next_funding_ns": [first + 3600 * NS, None]},
        schema=FUNDING,
    )  # fmt: skip
    with store.locked():
        store.write(EX, A, Kind.FUNDING, funding)
    return store


def collect(feed: ReplayFeed, timeout_s: float = 60.0) -> tuple[list[Any], list[int]]:
    """Every event until the feed ends, with its arrival (monotonic ns)."""
    events: list[Any] = []
    arrivals: list[int] = []
    feed.start()
    deadline = time.monotonic() + timeout_s
    while not feed.done and time.monotonic() < deadline:
        event = feed.get(0.05)
        if event is not None:
            events.append(event)
            arrivals.append(time.monotonic_ns())
    feed.stop()
    assert feed.done, feed.stats()
    return events, arrivals


def kinds(events: list[Any]) -> list[tuple[int, int]]:
    """(ts, KIND) of the ticks and depth events: the merge_events view of a stream."""
    codes = {Quote: KIND_QUOTE, Trade: KIND_TRADE, DepthEvent: KIND_DEPTH}
    return [(e.ts_ns, codes[type(e)]) for e in events if type(e) in codes]


def test_as_fast_as_possible_delivers_everything_in_the_training_order(store: TickStore) -> None:
    first, last = store_range(store, EX, A)
    feed = ReplayFeed(store, EX, [A, B], first, last + 1, speed=None, max_events=50)
    events, _ = collect(feed)
    assert type(events[0]) is FeedStatus and events[0][2:] == (CONNECTED, f"replay of {feed.total_events} events of "
                                                                          f"{A}, {B}")  # fmt: skip
    assert events[0].ts_ns == first and type(events[-1]) is FeedStatus and events[-1].state == ENDED
    body = events[1:-1]
    assert len(body) == feed.total_events and feed.stats()["conflated"] == 0  # nothing lost to the bound

    for symbol in (A, B):
        trades = store.read(EX, symbol, Kind.TRADES, first, last + 1)
        quotes = store.read(EX, symbol, Kind.QUOTES, first, last + 1)
        stream = merge_events(trades, quotes)
        mine = [e for e in body if e.symbol == symbol and type(e) in (Quote, Trade)]
        assert kinds(mine) == list(zip(stream.ts_ns.tolist(), stream.kind.tolist(), strict=True))
        quote_rows = [e for e in mine if type(e) is Quote]
        assert [(q.bid, q.bid_qty, q.ask, q.ask_qty) for q in quote_rows] == [
            tuple(r.values()) for r in quotes.select(["bid_px", "bid_qty", "ask_px", "ask_qty"]).to_pylist()
        ]
    assert [e.ts_ns for e in body] == sorted(e.ts_ns for e in body)  # symbols merged by time
    marks = [e for e in body if type(e) is MarkPrice]
    assert [(m.mark_px, m.funding_rate, m.next_funding_ns) for m in marks] == [
        (60_000.0, 1e-4, first + 3600 * NS), (60_010.0, 2e-4, None)
    ]  # fmt: skip
    assert np.isnan(marks[1].index_px)
    at = body.index(marks[0])  # after the ticks of its time, before later ones
    assert body[at - 1].ts_ns <= marks[0].ts_ns < body[at + 1].ts_ns


def test_accelerated_replay_keeps_event_time_at_n_times_real_time(store: TickStore) -> None:
    first, _ = store_range(store, EX, A)
    span_ns = 20 * NS
    speed = 40.0  # 20 s of event time in ~0.5 s
    feed = ReplayFeed(store, EX, A, first, first + span_ns, speed=speed, funding=False)
    started = time.monotonic_ns()
    events, arrivals = collect(feed)
    elapsed = (arrivals[-1] - started) / NS
    assert 0.45 < elapsed < 2.0
    ticks = [(e.ts_ns, t) for e, t in zip(events, arrivals, strict=True) if type(e) in (Quote, Trade)]
    due = [started + (ts - first) / speed for ts, _ in ticks]
    early = [d - t for (_, t), d in zip(ticks, due, strict=True)]
    assert max(early) < 2e6  # never ahead of its time (by more than the 0.5 ms sleep threshold + jitter)
    assert np.median([-e for e in early]) < 50e6  # and not far behind


def test_the_source_is_passed_through_and_its_anomalies_counted(tmp_path: Path) -> None:
    store = TickStore(tmp_path)
    t0 = 1_704_067_200 * NS
    trades = pa.table({"ts_ns": [t0 + 1, t0 + 2, t0 + 3], "recv_ns": [None] * 3, "trade_id": [1, 3, 2],
                       "price": [100.0] * 3, "qty": [1.0] * 3, "side": [1, -1, 1]}, schema=TRADES)  # fmt: skip
    quotes = pa.table({"ts_ns": [t0, t0 + 2, t0 + 4, t0 + 5], "recv_ns": [None] * 4, "update_id": [10, 10, 9, 11],
                       "bid_px": [99.0] * 4, "bid_qty": [1.0, 2.0, 3.0, 4.0], "ask_px": [101.0] * 4,
                       "ask_qty": [1.0] * 4}, schema=QUOTES)  # fmt: skip
    with store.locked():
        store.write("x", A, Kind.TRADES, trades)
        store.write("x", A, Kind.QUOTES, quotes)
    feed = ReplayFeed(store, "x", A, t0, t0 + NS, speed=0)
    events, _ = collect(feed)
    ticks = [(e.ts_ns - t0, type(e).__name__) for e in events if type(e) in (Quote, Trade)]
    assert ticks == [(0, "Quote"), (1, "Trade"), (2, "Quote"), (2, "Trade"), (3, "Trade"), (4, "Quote"), (5, "Quote")]
    # quote id 10 twice, then 9 after 10; trade id 2 after 3
    assert (feed.stats()["duplicates"], feed.stats()["out_of_order"]) == (1, 2)


def test_an_empty_window_fails_in_start(store: TickStore) -> None:
    with pytest.raises(NoReplayDataError, match="no ticks"):
        ReplayFeed(store, EX, A, 1, 2).start()
    with pytest.raises(NoReplayDataError, match="empty replay window"):
        ReplayFeed(store, EX, A, 2, 2)


@pytest.mark.realdata
def test_raw_depth_leaves_an_online_book_equal_to_the_batch_replay(shared_data: Path, tmp_path: Path) -> None:
    """Binance USD-M capture (with its REST snapshot after the first diffs): the stream's depth
    messages, fed to an online L2 book, give exactly the batch stream's depth events."""
    path = shared_data / "binance_ws_raw" / "usdm_btcusdt_20240808.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    sample = tmp_path / "usdm_sample.gz"
    with gzip.open(path, "rt") as src, gzip.open(sample, "wt") as dst:
        dst.writelines(line for _, line in zip(range(4_000), src))
    store = TickStore(tmp_path / "store")
    ingest(FileSource(str(sample)), store, QualityConfig())
    first, last = store_range(store, "binanceusdm", A)
    start = first + 2 * NS  # after the snapshot: the feed starts the book from it
    feed = ReplayFeed(store, "binanceusdm", A, start, last + 1, speed=None, depth=True)
    events, _ = collect(feed)

    trades = store.read("binanceusdm", A, Kind.TRADES, start, last + 1)
    quotes = store.read("binanceusdm", A, Kind.QUOTES, start, last + 1)
    batch = merge_events(trades, quotes, depth_rows(store, "binanceusdm", A, start, last + 1))
    book = L2Book()
    online: list[tuple[int, int]] = []
    summaries = []
    for event in events:
        if type(event) is DepthEvent:
            summary = book.apply(event.update)
            if summary is not None:
                online.append((event.ts_ns, KIND_DEPTH))
                summaries.append(summary.copy())
        elif type(event) in (Quote, Trade):
            online.append(kinds([event])[0])
    assert online == list(zip(batch.ts_ns.tolist(), batch.kind.tolist(), strict=True))
    assert len(summaries) == len(batch.depth) > 100
    assert np.array_equal(np.array(summaries), batch.depth, equal_nan=True)
    assert any(e.ts_ns < start for e in events if type(e) is DepthEvent)  # the book's history
    assert feed.stats()["gaps"] == 0
