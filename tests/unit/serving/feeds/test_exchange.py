"""ExchangeFeed through ccxt.pro's real code, fed the raw Binance messages of
usdm_btcusdt_20240808.gz exactly as received (no network).

A real ``ccxt.pro.binanceusdm`` with ccxt's recorded markets; only its transports are replaced
(``binance_fake``): ccxt's client, subscriptions, ``handle_message`` dispatch, trade and ticker
parsers and REST order-book parser produce what the feed normalises. The expected values come from
the files source (``pipeline.data.sources.files``) parsing the same lines, and, for depth, from
Binance's book rule applied here independently. Backoff timing goes through an injected sleep.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import ccxt
import ccxt.pro
import pytest

from pipeline.config import ExchangeConfig
from pipeline.data.schemas import Kind
from pipeline.errors import ConfigError
from pipeline.features.l2book import L2Book
from serving.events import Quote, Trade
from serving.feeds.base import (
    CONNECTED, DISCONNECTED, FAILED, GAP, RECONNECTING, RESYNCED, STALE, DepthEvent, FeedStatus, MarkPrice,
)  # fmt: skip
from serving.feeds.exchange import Backoff, ExchangeFeed, ExchangeFeedConfig

from .binance_fake import FakeBinance, load_markets, load_recording, pro_client

SYMBOL = "BTC/USDT:USDT"
LINES = 1500  # ~230 trades, ~1,150 book tickers, ~110 depth diffs and the REST snapshot (line 55)
MS = 1_000_000
ONLY = {"trades": False, "quotes": False, "mark_price": False, "depth": False}


@pytest.fixture(scope="module")
def markets(shared_data: Path) -> dict[str, Any]:
    return load_markets(shared_data)


@pytest.fixture(scope="module")
def recording(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return load_recording(shared_data, tmp_path_factory.mktemp("ws"), LINES)


class Delays:
    """The backoff's sleep: records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def feed_for(markets: dict[str, Any], server: FakeBinance, **config: Any) -> tuple[ExchangeFeed, Delays]:
    sleep = Delays()
    options = ExchangeFeedConfig(**{"backoff_jitter": 0.0, "depth_rate_ms": 0, **config})
    feed = ExchangeFeed(ExchangeConfig(), SYMBOL, options, client=pro_client(markets, server), sleep=sleep)
    return feed, sleep


def run_until(feed: ExchangeFeed, done, timeout_s: float = 30.0, settle_s: float = 0.0) -> list[Any]:
    """Start the feed, collect events until ``done(events)`` holds (and ``settle_s`` more), stop it."""
    events: list[Any] = []
    feed.start()
    deadline = time.monotonic() + timeout_s
    finished = None
    try:
        while time.monotonic() < deadline:
            if finished is None and done(events):
                finished = time.monotonic()
            if finished is not None and time.monotonic() - finished >= settle_s:
                break
            event = feed.get(0.05)
            if event is not None:
                events.append(event)
                events += feed.drain()
        assert finished is not None, f"timed out; stats {feed.stats()}, statuses {statuses(events)}"
    finally:
        feed.stop()
    return events + feed.drain(10**9)


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if type(e) is kind]


def statuses(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.state, e.detail) for e in events if type(e) is FeedStatus]


def expected_trades(recording: dict[str, Any]) -> list[Trade]:
    rows = recording["files"][(SYMBOL, Kind.TRADES)].to_pylist()
    return [Trade(SYMBOL, r["ts_ns"], r["price"], r["qty"], r["side"]) for r in rows]


def expected_quotes(recording: dict[str, Any]) -> list[Quote]:
    rows = recording["files"][(SYMBOL, Kind.QUOTES)].to_pylist()
    return [Quote(SYMBOL, r["ts_ns"], r["bid_px"], r["bid_qty"], r["ask_px"], r["ask_qty"]) for r in rows]


def file_depth(recording: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The files source's depth rows as one snapshot and a list of diffs (in recorded order)."""
    rows = recording["files"][(SYMBOL, Kind.DEPTH)].to_pylist()
    snapshot: dict[str, Any] = {"levels": []}
    diffs: dict[int, dict[str, Any]] = {}
    for r in rows:
        if r["is_snapshot"]:
            snapshot.update(update_id=r["update_id"], ts_ns=r["ts_ns"])
            snapshot["levels"].append((r["side"], r["price"], r["qty"]))
        else:
            diff = diffs.setdefault(r["update_id"], {"ids": (r["first_update_id"], r["update_id"], r["prev_update_id"]),
                                                     "ts_ns": r["ts_ns"], "levels": []})  # fmt: skip
            diff["levels"].append((r["side"], r["price"], r["qty"]))
    return snapshot, list(diffs.values())


def levels(event: DepthEvent) -> list[tuple[int, float, float]]:
    u = event.update
    return list(zip(u.side.tolist(), u.price.tolist(), u.qty.tolist(), strict=True))


# ----------------------------------------------------------------------------- parsing


@pytest.mark.realdata
def test_recorded_messages_become_the_events_the_files_source_parses(markets, recording) -> None:
    server = FakeBinance(recording["texts"], rest={"/fapi/v1/depth": [recording["snapshot"]]})
    feed, _ = feed_for(markets, server, mark_price=False, depth=True)
    events = run_until(feed, lambda _: server.pending() == 0, settle_s=0.5)
    assert sorted(map(sorted, server.subscribed)) == [["btcusdt@bookTicker"], ["btcusdt@depth@0ms"], ["btcusdt@trade"]]
    assert not feed.client.clients  # stop() closed ccxt's connections

    trades, quotes = of(events, Trade), of(events, Quote)
    assert len(trades) > 200 and len(quotes) > 1000
    assert trades == expected_trades(recording)  # every @trade, in order, as the files source has it
    assert quotes == expected_quotes(recording)  # every @bookTicker (the fake waits for the consumer)

    # depth: ccxt's parse of the recorded REST snapshot, then the raw diffs from the one that
    # straddles it, each as the files source stored it
    snapshot, diffs = file_depth(recording)
    depth = of(events, DepthEvent)
    first = depth[0]
    assert first.update.is_snapshot and first.update.update_id == snapshot["update_id"]
    assert first.ts_ns == snapshot["ts_ns"] == recording["snapshot"]["T"] * MS
    assert sorted(levels(first)) == sorted(snapshot["levels"]) and len(levels(first)) == 2000
    last_id = snapshot["update_id"]
    straddle = next(i for i, d in enumerate(diffs) if d["ids"][0] <= last_id <= d["ids"][1])
    expected = diffs[straddle:]
    assert [(e.update.first_update_id, e.update.update_id, e.update.prev_update_id) for e in depth[1:]] == [
        d["ids"] for d in expected
    ]
    assert [e.ts_ns for e in depth[1:]] == [d["ts_ns"] for d in expected]
    assert [levels(e) for e in depth[1:]] == [d["levels"] for d in expected]
    assert len(expected) > 50

    states = [s for s, _ in statuses(events)]
    assert states.count(CONNECTED) == 3 and states.count(RESYNCED) == 1 and GAP not in states
    stats = feed.stats()
    assert stats["received"] == stats["delivered"] == len(events)
    assert (stats["dropped"], stats["conflated"], stats["gaps"], stats["reconnects"], stats["duplicates"]) == (0,) * 5
    assert server.rest_paths() == ["/fapi/v1/depth"]  # the one snapshot ccxt fetched on subscribing


@pytest.mark.realdata
def test_mark_price_and_funding(markets) -> None:
    """The recordings have no mark-price stream: Binance's documented markPriceUpdate example."""
    data = {"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT", "p": "11794.15000000",
            "i": "11784.62659091", "P": "11784.25641265", "r": "0.00038167", "T": 1562306400000}  # fmt: skip
    lines = [json.dumps({"stream": "btcusdt@markPrice@1s", "data": {**data, "E": data["E"] + k}}) for k in range(3)]
    server = FakeBinance(lines)
    feed, _ = feed_for(markets, server, **{**ONLY, "mark_price": True})
    events = run_until(feed, lambda ev: len(of(ev, MarkPrice)) == 3)
    assert server.subscribed == [["btcusdt@markPrice@1s"]]
    assert of(events, MarkPrice) == [
        MarkPrice(SYMBOL, (1562305380000 + k) * MS, 11794.15, 11784.62659091, 0.00038167, 1562306400000 * MS)
        for k in range(3)
    ]


@pytest.mark.realdata
def test_an_unknown_symbol_fails_in_start(markets) -> None:
    server = FakeBinance([])
    feed = ExchangeFeed(ExchangeConfig(), "NOPE/USDT:USDT", client=pro_client(markets, server))
    with pytest.raises(ConfigError, match="NOPE/USDT:USDT"):
        feed.start()


def test_depth_needs_binance() -> None:
    client = ccxt.pro.okx({"enableRateLimit": False})
    feed = ExchangeFeed(ExchangeConfig(id="okx"), SYMBOL, ExchangeFeedConfig(depth=True), client=client)
    with pytest.raises(ConfigError, match="raw depth needs a Binance exchange"):
        feed.start()


# ----------------------------------------------------------------------------- faults


@pytest.mark.realdata
def test_refused_connections_are_retried_with_exponential_backoff(markets, recording, monkeypatch) -> None:
    server = FakeBinance(recording["texts"], connect_failures=3)
    feed, sleep = feed_for(markets, server, **{**ONLY, "trades": True}, backoff_base_s=0.5)
    monkeypatch.setattr(feed.client, "ws_dial_delay", lambda url: 0)  # ccxt's own dial backoff sleeps for real
    expected = expected_trades(recording)
    events = run_until(feed, lambda ev: len(of(ev, Trade)) == len(expected))
    assert sleep.delays == [0.5, 1.0, 2.0]
    assert server.dials == 4 and server.subscribed == [["btcusdt@trade"]]
    assert statuses(events) == [
        (RECONNECTING, f"trades: retry {n} in {d} s (NetworkError: fake Binance refused the connection)")
        for n, d in ((1, "0.5"), (2, "1"), (3, "2"))
    ] + [(CONNECTED, "trades")]
    assert of(events, Trade) == expected
    assert (feed.stats()["reconnects"], feed.stats()["disconnects"]) == (3, 3)


@pytest.mark.realdata
def test_dropped_connections_reconnect_resubscribe_and_lose_nothing(markets, recording) -> None:
    trade_lines = [n for n, t in enumerate(recording["texts"]) if '"btcusdt@trade"' in t]
    drops = [trade_lines[60], trade_lines[60], trade_lines[150]]
    server = FakeBinance(recording["texts"], drops=drops)
    feed, sleep = feed_for(markets, server, **{**ONLY, "trades": True}, backoff_base_s=0.5)
    expected = expected_trades(recording)
    events = run_until(feed, lambda ev: len(of(ev, Trade)) == len(expected))
    # two drops in a row (0.5 s, 1 s), data again (the backoff starts over), one more drop
    assert sleep.delays == [0.5, 1.0, 0.5]
    assert server.subscribed == [["btcusdt@trade"]] * 4
    assert [s for s, _ in statuses(events)] == [
        CONNECTED, DISCONNECTED, RECONNECTING, RECONNECTING, CONNECTED, DISCONNECTED, RECONNECTING, CONNECTED
    ]  # fmt: skip
    assert of(events, Trade) == expected  # the line at each drop goes out after the reconnect
    assert feed.stats()["reconnects"] == 3


def test_backoff_grows_to_its_cap_with_bounded_jitter() -> None:
    plain = Backoff(0.5, 8.0, 0.0)
    assert [plain.delay(a) for a in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    jittered = Backoff(0.5, 8.0, 0.2, random.Random(1))
    delays = [jittered.delay(a) for a in range(200)]
    caps = [min(0.5 * 2**a, 8.0) for a in range(200)]
    assert all(0.8 * c <= d <= 1.2 * c for d, c in zip(delays, caps, strict=True))
    assert len({round(d / c, 6) for d, c in zip(delays, caps, strict=True)}) > 150  # really random


def true_book_after(snapshot: dict[str, Any], diffs: list[dict[str, Any]], update_id: int) -> dict[str, Any]:
    """Binance's rule, independently of the feed: the book after diff ``update_id``, as a REST
    snapshot body (decimal strings)."""
    bids = {float(p): float(q) for p, q in snapshot["bids"]}
    asks = {float(p): float(q) for p, q in snapshot["asks"]}
    last, out = snapshot["lastUpdateId"], None
    for diff in diffs:
        if diff["u"] < last:
            continue
        for book, updates in ((bids, diff["b"]), (asks, diff["a"])):
            for price, qty in updates:
                book[float(price)] = float(qty)
        if diff["u"] == update_id:
            out = diff
            break
    assert out is not None
    return {
        "lastUpdateId": update_id, "E": out["E"], "T": out["T"],
        "bids": [[repr(p), repr(q)] for p, q in sorted(bids.items(), reverse=True) if q],
        "asks": [[repr(p), repr(q)] for p, q in sorted(asks.items()) if q],
    }  # fmt: skip


@pytest.mark.realdata
def test_a_lost_depth_diff_is_a_gap_resynced_from_a_rest_snapshot(markets, recording) -> None:
    texts, snapshot = recording["texts"], recording["snapshot"]
    depth_lines = [(n, json.loads(t)["data"]) for n, t in enumerate(texts) if '"btcusdt@depth@0ms"' in t]
    after = [(n, d) for n, d in depth_lines if d["u"] >= snapshot["lastUpdateId"]]
    lost_line, lost = after[30]
    resync_id = after[36][1]["u"]  # the exchange's book a few diffs later
    diffs = [d for _, d in depth_lines]
    rest = {"/fapi/v1/depth": [snapshot, true_book_after(snapshot, diffs, resync_id)]}
    server = FakeBinance(texts, rest=rest, skip=[lost_line])
    feed, _ = feed_for(markets, server, **{**ONLY, "depth": True})
    last_u = diffs[-1]["u"]
    events = run_until(feed, lambda ev: any(type(e) is DepthEvent and e.update.update_id == last_u for e in ev))

    states = [s for s, _ in statuses(events) if s in (GAP, RESYNCED)]
    assert states == [RESYNCED, GAP, RESYNCED]
    gap_detail = next(d for s, d in statuses(events) if s == GAP)
    assert f"pu {lost['u']} does not follow u {lost['pu']}" == gap_detail
    assert server.rest_paths() == ["/fapi/v1/depth", "/fapi/v1/depth"]  # ccxt's on subscribing, then ours
    assert (feed.stats()["gaps"], feed.stats()["resyncs"]) == (1, 2)

    # a downstream book fed these events: invalid from the broken diff to the new snapshot, then
    # the exchange's book again
    book = L2Book()
    snapshots = 0
    for event in of(events, DepthEvent):
        book.apply(event.update)
        snapshots += event.update.is_snapshot
    assert snapshots == 2 and book.outcomes["gap"] == 1 and book.valid
    truth = true_book_after(snapshot, diffs, last_u)
    top_bids = [(float(p), float(q)) for p, q in truth["bids"][:20]]
    top_asks = [(float(p), float(q)) for p, q in truth["asks"][:20]]
    n_bid, n_ask = int(book.meta[0]), int(book.meta[1])
    assert list(zip(book.keys[0, :n_bid][::-1][:20].tolist(), book.sizes[0, :n_bid][::-1][:20].tolist())) == top_bids
    assert list(zip((-book.keys[1, :n_ask][::-1][:20]).tolist(), book.sizes[1, :n_ask][::-1][:20].tolist())) == top_asks


class Clock:
    """Wall time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset_ns = 0

    def __call__(self) -> int:
        return time.time_ns() + self.offset_ns


@pytest.mark.realdata
def test_a_silent_feed_turns_stale_reconnects_and_recovers(markets, recording) -> None:
    trade_lines = [n for n, t in enumerate(recording["texts"]) if '"btcusdt@trade"' in t]
    server = FakeBinance(recording["texts"], hold_from=trade_lines[50])
    clock = Clock()
    feed, sleep = feed_for(markets, server, **{**ONLY, "trades": True}, stale_after_s=5, stale_check_s=0.01)
    feed.clock_ns = clock
    expected = expected_trades(recording)
    events: list[Any] = []

    def progress(ev: list[Any]) -> bool:
        trades = len(of(ev, Trade))
        if trades == 50 and clock.offset_ns == 0:
            clock.offset_ns = 10 * 10**9  # ten silent seconds pass
        if any(type(e) is FeedStatus and e.state == STALE for e in ev) and len(server.subscribed) == 2:
            server.release()  # the exchange talks again, on the new connection
        return trades == len(expected)

    events = run_until(feed, progress)
    seen = statuses(events)
    assert [s for s, _ in seen] == [CONNECTED, STALE, DISCONNECTED, RECONNECTING, CONNECTED, CONNECTED]
    assert seen[1][1].startswith("no message for 1") and seen[1][1].endswith(" s")  # ~10 s
    assert seen[2][1].startswith("trades: NetworkError: no message from BTC/USDT:USDT for 1")
    assert seen[-2:] == [(CONNECTED, "trades"), (CONNECTED, "data again")]
    assert of(events, Trade) == expected
    assert feed.stats()["stale"] == 1 and len(server.connections) == 2 and sleep.delays == [0.5]


@pytest.mark.realdata
def test_stop_is_prompt_and_keeps_what_was_buffered(markets, recording) -> None:
    server = FakeBinance(recording["texts"])
    feed, _ = feed_for(markets, server, **{**ONLY, "trades": True})
    feed.start()
    deadline = time.monotonic() + 20
    while len(feed.buffer) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    feed.stop()
    assert time.monotonic() - started < 2 and not feed.running
    assert not feed.client.clients and all(c.closed for c in server.connections)
    left = feed.drain(10**6)
    assert len(left) >= 20 and feed.done
    assert not feed.buffer.put(Trade(SYMBOL, 1, 1.0, 1.0, 1))  # closed: refused and counted
    assert feed.stats()["dropped"] == 1


@pytest.mark.realdata
def test_a_non_transient_error_fails_the_feed(markets) -> None:
    server = FakeBinance([])
    feed, _ = feed_for(markets, server, **{**ONLY, "trades": True})

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ccxt.BadSymbol("binanceusdm does not have market symbol")

    feed.client.watch_trades = refuse
    events = run_until(feed, lambda ev: any(type(e) is FeedStatus and e.state == FAILED for e in ev))
    failed = [d for s, d in statuses(events) if s == FAILED]
    assert failed == [
        "SourceError: binanceusdm trades(BTC/USDT:USDT): BadSymbol: binanceusdm does not have market symbol"
    ]
    assert feed.error == failed[0] and not feed.running
