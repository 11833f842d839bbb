"""``ReplayFeed``: the tick store played back as a live feed, in real time, faster, or as fast as
the daemon takes it.

Each symbol's stream is built by ``pipeline.features.events.merge_events``, the function training,
feature extraction and the backtester use, so the daemon sees ticks in the order the models were
trained on. With ``depth`` the stream carries the raw depth messages (from the latest snapshot at
or before the start, as the backtester reads them), each handed over where the batch stream has
the depth event it produced: a message that left no valid book (stale, before any snapshot, after
a gap) goes out just before the next one that did, so an online ``FeatureEngine`` fed this stream
holds the same book as the batch replay at every depth event. A depth update is stamped with its
stream time (the latest exchange time so far, as in ``merge_events``). Funding rows become
``MarkPrice`` events. Several symbols are merged by stream time (ties: in the order given).

A paper account has its own clock (the simulated venue's, persisted): a replay for it must not go
back in that time (orders would wait in flight until the market caught up with the venue, and the
venue's fills would date the engine's data stale). ``resume_window`` decides where a replay starts
for a venue whose clock is at ``not_before_ns``: from the venue's clock when that lies inside the
range (the part before it was lived through already: a restarted daemon continues), and when the
venue is past the whole range, the range again, its times shifted by whole days to after the
venue's clock (time of day, funding times and the UTC day stay as recorded; only the date moves).

The source is passed through as stored: repeated and out-of-order trade/quote ids and stale or
gapped depth messages reach the daemon (the engine and the feature engine define what they do
with them) and are counted in ``stats()``: ``duplicates``, ``out_of_order``, ``gaps``.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.data.schemas import Kind
from pipeline.data.store import TickStore
from pipeline.features import l2book
from pipeline.features.core import KIND_QUOTE, KIND_TRADE
from pipeline.features.events import DepthUpdates, EventArrays, depth_updates, merge_events
from serving.backtest.data import NoReplayDataError, depth_rows, store_range
from serving.events import Quote, Trade
from serving.feeds.base import CONNECTED, ENDED, DepthEvent, Event, Feed, MarkPrice


@dataclass(frozen=True)
class RawDepth:
    """A symbol's depth messages in sequence order, with their stream times, and for the k-th
    depth event of the merged stream the messages to hand over with it: ``groups[k]:groups[k+1]``
    (the last group, after the last depth event, goes out at the end)."""

    updates: DepthUpdates
    stream_ts: np.ndarray  # running max of the exchange times, as merge_events stamps depth events
    groups: np.ndarray  # int64 [depth events + 2]
    outcomes: np.ndarray  # l2book outcome of each message

    def update(self, j: int, shift_ns: int = 0) -> l2book.DepthUpdate:
        u = self.updates
        lo, hi = u.starts[j], u.starts[j + 1]
        return l2book.DepthUpdate(
            int(self.stream_ts[j]) + shift_ns, int(u.update_id[j]), bool(u.is_snapshot[j]), u.side[lo:hi],
            u.price[lo:hi], u.qty[lo:hi], int(u.first_update_id[j]), int(u.prev_update_id[j]),
        )  # fmt: skip


def raw_depth(depth: pa.Table) -> RawDepth:
    """Group a symbol's depth rows into messages and find which of them produce a depth event
    (``l2book.replay`` over them, as ``merge_events`` does)."""
    updates = depth_updates(depth)
    m = len(updates)
    outcomes = np.zeros(m, dtype=np.int64)
    book = l2book.L2Book()
    l2book.replay(book.keys, book.sizes, book.meta, updates.starts, updates.is_snapshot, updates.first_update_id,
                  updates.update_id, updates.prev_update_id, updates.side, updates.price, updates.qty,
                  np.full((m, l2book.SUMMARY_SIZE), np.nan), outcomes)  # fmt: skip
    applied = np.flatnonzero(outcomes == l2book.APPLIED)
    groups = np.r_[0, applied + 1, m].astype(np.int64)
    stream_ts = np.maximum.accumulate(updates.ts_ns) if m else updates.ts_ns
    return RawDepth(updates, stream_ts, groups, outcomes)


def stream_events(symbol: str, events: EventArrays, depth: RawDepth | None = None,
                  shift_ns: int = 0) -> Iterator[tuple[int, Event]]:  # fmt: skip
    """(stream time, event) of one symbol's merged stream, in its order; every time ``shift_ns`` later."""
    ts = (events.ts_ns + shift_ns if shift_ns else events.ts_ns).tolist()
    kind = events.kind.tolist()
    price, qty, side = events.price.tolist(), events.qty.tolist(), events.side.tolist()
    bid, bid_qty = events.bid.tolist(), events.bid_qty.tolist()
    ask, ask_qty = events.ask.tolist(), events.ask_qty.tolist()
    depth_row = events.depth_row.tolist()  # type: ignore[union-attr]
    for i, k in enumerate(kind):
        if k == KIND_QUOTE:
            yield ts[i], Quote(symbol, ts[i], bid[i], bid_qty[i], ask[i], ask_qty[i])
        elif k == KIND_TRADE:
            yield ts[i], Trade(symbol, ts[i], price[i], qty[i], int(side[i]))
        elif depth is not None:
            row = depth_row[i]
            for j in range(depth.groups[row], depth.groups[row + 1]):
                update = depth.update(j, shift_ns)
                yield ts[i], DepthEvent(symbol, update.ts_ns, update)
    if depth is not None:
        for j in range(depth.groups[-2], depth.groups[-1]):
            update = depth.update(j, shift_ns)
            yield update.ts_ns, DepthEvent(symbol, update.ts_ns, update)


def funding_events(symbol: str, funding: pa.Table, shift_ns: int = 0) -> Iterator[tuple[int, Event]]:
    rows = funding.to_pylist()
    for row in sorted(rows, key=lambda r: r["ts_ns"]):
        ts, next_ns = row["ts_ns"] + shift_ns, row["next_funding_ns"]
        yield ts, MarkPrice(symbol, ts, _num(row["mark_px"]), _num(row["index_px"]), _num(row["funding_rate"]),
                            next_ns + shift_ns if next_ns is not None else None)  # fmt: skip


def _num(value: float | None) -> float:
    return math.nan if value is None else float(value)


NS_PER_DAY = 86_400 * 1_000_000_000


def resume_window(start_ns: int, end_ns: int, not_before_ns: int) -> tuple[int, int, int]:
    """(start, end, shift_ns) of a replay of ``[start_ns, end_ns)`` for a venue whose clock is at
    ``not_before_ns`` (module doc): every event is played at its time + ``shift_ns``."""
    if not_before_ns <= start_ns:
        return start_ns, end_ns, 0
    if not_before_ns < end_ns:
        return not_before_ns, end_ns, 0
    days = -(-(not_before_ns - start_ns) // NS_PER_DAY)  # ceil: whole days keep the time of day
    return start_ns, end_ns, days * NS_PER_DAY


def merge_lanes(lanes: Sequence[Iterator[tuple[int, Event]]]) -> Iterator[tuple[int, Event]]:
    """Streams merged by stream time; on a tie the earlier lane first, each lane kept in order."""
    if len(lanes) == 1:
        yield from lanes[0]
        return
    heads = [_tag(stream, lane) for lane, stream in enumerate(lanes)]
    for (ts, _lane, _n), event in heapq.merge(*heads, key=lambda item: item[0]):
        yield ts, event


def _tag(stream: Iterator[tuple[int, Event]], lane: int) -> Iterator[tuple[tuple[int, int, int], Event]]:
    for n, (ts, event) in enumerate(stream):
        yield (ts, lane, n), event


def id_anomalies(ids: np.ndarray) -> tuple[int, int]:
    """(repeats, decreases) of a stream's exchange ids in stream order (nulls ignored)."""
    ids = ids[ids >= 0]
    if ids.size < 2:
        return 0, 0
    steps = ids[1:] - np.maximum.accumulate(ids)[:-1]
    return int(np.count_nonzero(ids[1:] == ids[:-1])), int(np.count_nonzero(steps < 0))


def _ids_in_stream_order(table: pa.Table, column: str) -> np.ndarray:
    """A table's ids in the order merge_events plays its rows: exchange time, then receive time."""
    ts = table.column("ts_ns").to_numpy()
    recv = table.column("recv_ns").fill_null(0).to_numpy()
    ids = table.column(column).fill_null(-1).to_numpy()
    return ids[np.lexsort((recv, ts))]


class ReplayFeed(Feed):
    """Ticks of ``symbols`` in ``[start_ns, end_ns)`` from the store (see module doc).

    ``speed`` N plays event time N times faster than real time (1: real time); None or 0: as fast
    as the daemon drains (nothing conflated). ``shift_ns``: every event (and status) is stamped
    that much later than stored (``resume_window``). The data are read by ``start()``, so a range with no
    data fails there (``NoReplayDataError``). Statuses carry event time: ``connected`` at the
    start, ``ended`` after the last event.
    """

    name = "replay"

    def __init__(
        self,
        store: TickStore,
        exchange: str,
        symbols: str | Sequence[str],
        start_ns: int,
        end_ns: int,
        speed: float | None = 1.0,
        depth: bool = False,
        funding: bool = True,
        max_events: int = 10_000,
        clock_ns: Callable[[], int] = time.time_ns,
        shift_ns: int = 0,
    ) -> None:
        super().__init__(max_events, clock_ns)
        if end_ns <= start_ns:
            raise NoReplayDataError(f"empty replay window: end {end_ns} <= start {start_ns}")
        if speed is not None and speed < 0:
            raise ValueError("speed must be >= 0 (0 or None: as fast as possible)")
        self.store = store
        self.exchange = exchange
        self.symbols = (symbols,) if isinstance(symbols, str) else tuple(symbols)
        self.start_ns, self.end_ns = start_ns, end_ns
        self.speed = speed
        self.depth = depth
        self.funding = funding
        self.shift_ns = shift_ns
        self.total_events = 0
        self._lanes: list[Iterator[tuple[int, Event]]] = []

    def _prepare(self) -> None:
        lanes = []
        for symbol in self.symbols:
            trades = self.store.read(self.exchange, symbol, Kind.TRADES, self.start_ns, self.end_ns)
            quotes = self.store.read(self.exchange, symbol, Kind.QUOTES, self.start_ns, self.end_ns)
            depth = None
            if self.depth:
                rows = depth_rows(self.store, self.exchange, symbol, self.start_ns, self.end_ns)
                depth = raw_depth(rows)
                events = merge_events(trades, quotes, rows)
                outcomes = np.bincount(depth.outcomes, minlength=len(l2book.OUTCOMES))
                self.counters["duplicates"] += int(outcomes[l2book.STALE])
                self.counters["gaps"] += int(outcomes[l2book.GAP])
                self.total_events += len(depth.updates) - int(np.count_nonzero(depth.outcomes == l2book.APPLIED))
            else:
                events = merge_events(trades, quotes)
            if not len(events):
                raise NoReplayDataError(
                    f"the store has no ticks of {self.exchange} {symbol} between {self.start_ns} and {self.end_ns}"
                )
            for table, column in ((trades, "trade_id"), (quotes, "update_id")):
                repeats, decreases = id_anomalies(_ids_in_stream_order(table, column))
                self.counters["duplicates"] += repeats
                self.counters["out_of_order"] += decreases
            self.total_events += len(events)
            lanes.append(stream_events(symbol, events, depth, self.shift_ns))
            if self.funding:
                rates = self.store.read(self.exchange, symbol, Kind.FUNDING, self.start_ns, self.end_ns)
                self.total_events += rates.num_rows
                lanes.append(funding_events(symbol, rates, self.shift_ns))
        self._lanes = lanes

    def history(self, n_events: int) -> list[Event]:
        """The last ``n_events`` trades and quotes before the replay's start, oldest first, shifted as
        the replay is: what a model is warmed on before it trades (a restarted daemon's continues
        the previous run's stream). Fewer when the store holds fewer; depth is left to the replay's
        own snapshot, funding to the replay."""
        if n_events <= 0:
            return []
        lanes = []
        for symbol in self.symbols:
            first, _ = store_range(self.store, self.exchange, symbol)
            span = 60 * 1_000_000_000
            while True:  # widen the window back in time until it holds enough
                lo = max(first, self.start_ns - span)
                trades = self.store.read(self.exchange, symbol, Kind.TRADES, lo, self.start_ns)
                quotes = self.store.read(self.exchange, symbol, Kind.QUOTES, lo, self.start_ns)
                if trades.num_rows + quotes.num_rows >= n_events or lo <= first:
                    break
                span *= 4
            events = merge_events(trades, quotes)
            keep = min(len(events), n_events)
            lanes.append(stream_events(symbol, events.slice(len(events) - keep) if keep else events, None,
                                       self.shift_ns))  # fmt: skip
        return [event for _, event in merge_lanes(lanes)][-n_events:]

    def _produce(self) -> None:
        origin = self.start_ns + self.shift_ns
        shifted = f", {self.shift_ns // NS_PER_DAY} day(s) later than stored" if self.shift_ns else ""
        self.status(None, CONNECTED, f"replay of {self.total_events} events of {', '.join(self.symbols)}{shifted}",
                    ts_ns=origin)  # fmt: skip
        last_ts = [origin]

        def stamped() -> Iterator[tuple[int, Event]]:
            for ts, event in merge_lanes(self._lanes):
                last_ts[0] = ts
                yield ts, event

        emitted = self._play(stamped(), self.speed, origin)
        if not self._stopping.is_set():
            self.status(None, ENDED, f"{emitted} events replayed", ts_ns=last_ts[0])
