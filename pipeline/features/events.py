"""The event stream the features run on: trades, top-of-book quotes and depth updates of one symbol,
merged.

Order: exchange time, then receive time, then quotes before trades before depth updates (a depth
update on a tie comes last: a feature never sees a book summary before the quote of the same
instant). The replay feed, the backtest and feature extraction all build the stream here, so they
see the same sequence.

Depth rows (``pipeline.data.schemas.DEPTH``) are grouped into updates (a snapshot, or one diff
message), put in sequence order (update id, a snapshot before a diff ending at its id) and
replayed through the L2 book (``pipeline.features.l2book``). Each update that leaves a valid book
is a depth event carrying the book's summary; its time is the latest exchange and receive time of
the updates applied so far, because that is when the book it summarises was known (the REST
snapshot of a Binance capture arrives after the first diffs that follow it), and so depth events
keep their sequence order in the merge. The summaries live in ``depth`` ([updates, SUMMARY_SIZE]);
``depth_row`` points each event to its row (-1: not a depth event).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.data.schemas import DEPTH, QUOTES, TRADES, Kind
from pipeline.data.sources.base import TickBatch
from pipeline.features import l2book
from pipeline.features.core import KIND_DEPTH, KIND_QUOTE, KIND_TRADE

log = logging.getLogger(__name__)

TICK_COLUMNS = ("ts_ns", "kind", "price", "qty", "side", "bid", "bid_qty", "ask", "ask_qty")


@dataclass(frozen=True)
class EventArrays:
    ts_ns: np.ndarray  # int64
    kind: np.ndarray  # int64: KIND_QUOTE, KIND_TRADE or KIND_DEPTH
    price: np.ndarray  # float64, trades (NaN on quotes)
    qty: np.ndarray
    side: np.ndarray  # float64 +1 / -1 / 0
    bid: np.ndarray  # float64, quotes (NaN on trades)
    bid_qty: np.ndarray
    ask: np.ndarray
    ask_qty: np.ndarray
    depth_row: np.ndarray | None = None  # int64, row of ``depth`` (-1 elsewhere); None: no depth
    depth: np.ndarray | None = None  # float64 [depth updates, l2book.SUMMARY_SIZE], not sliced

    def __post_init__(self) -> None:
        if self.depth_row is None:
            object.__setattr__(self, "depth_row", np.full(len(self.ts_ns), -1, dtype=np.int64))
        if self.depth is None:
            object.__setattr__(self, "depth", np.empty((0, l2book.SUMMARY_SIZE)))

    def __len__(self) -> int:
        return len(self.ts_ns)

    def slice(self, start: int, stop: int | None = None) -> EventArrays:
        """Events [start, stop); the summaries stay whole (``depth_row`` still points into them)."""
        return EventArrays(*(getattr(self, name)[start:stop] for name in (*TICK_COLUMNS, "depth_row")), self.depth)

    def columns(self) -> tuple[np.ndarray, ...]:
        """The per-event columns of quotes and trades, ``TICK_COLUMNS`` (a depth event's are NaN)."""
        return tuple(getattr(self, name) for name in TICK_COLUMNS)

    def ticks_only(self) -> tuple[EventArrays, np.ndarray]:
        """The stream without its depth events, and the index of each kept event in this one."""
        kept = np.flatnonzero(self.kind != KIND_DEPTH)
        return EventArrays(*(getattr(self, name)[kept] for name in TICK_COLUMNS)), kept


def _column(table: pa.Table, name: str, dtype) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        column = column.fill_null(np.nan if np.dtype(dtype).kind == "f" else 0)
    return column.to_numpy().astype(dtype, copy=False)


@dataclass(frozen=True)
class DepthUpdates:
    """Depth rows grouped into updates, in sequence order; update j's levels are rows
    ``starts[j]:starts[j + 1]``. Missing ids (and receive times) are ``l2book.NO_ID``."""

    ts_ns: np.ndarray
    recv_ns: np.ndarray
    update_id: np.ndarray
    first_update_id: np.ndarray
    prev_update_id: np.ndarray
    is_snapshot: np.ndarray  # bool
    starts: np.ndarray  # int64 [updates + 1]
    side: np.ndarray  # int8, per level row
    price: np.ndarray
    qty: np.ndarray

    def __len__(self) -> int:
        return len(self.update_id)

    def __iter__(self) -> Iterator[l2book.DepthUpdate]:
        for j in range(len(self)):
            lo, hi = self.starts[j], self.starts[j + 1]
            yield l2book.DepthUpdate(
                int(self.ts_ns[j]), int(self.update_id[j]), bool(self.is_snapshot[j]), self.side[lo:hi],
                self.price[lo:hi], self.qty[lo:hi], int(self.first_update_id[j]), int(self.prev_update_id[j]),
            )


def depth_updates(depth: pa.Table) -> DepthUpdates:
    """Group depth rows (store schema) into updates: rows sharing update id and snapshot flag."""
    ids = {name: _ids(depth, name) for name in ("ts_ns", "recv_ns", "update_id", "first_update_id", "prev_update_id")}
    snapshot = _column(depth, "is_snapshot", bool)
    # Sequence order; a snapshot before a diff with the same id; then as stored.
    order = np.lexsort((ids["ts_ns"], ~snapshot, ids["update_id"]))
    uid, snap = ids["update_id"][order], snapshot[order]
    first = np.flatnonzero(np.r_[True, (uid[1:] != uid[:-1]) | (snap[1:] != snap[:-1])]) if len(order) else order
    heads = order[first]
    return DepthUpdates(
        *(ids[name][heads] for name in ("ts_ns", "recv_ns", "update_id", "first_update_id", "prev_update_id")),
        snapshot[heads], np.r_[first, len(order)].astype(np.int64),
        np.ascontiguousarray(_column(depth, "side", np.int8)[order]),
        np.ascontiguousarray(_column(depth, "price", np.float64)[order]),
        np.ascontiguousarray(_column(depth, "qty", np.float64)[order]),
    )


def _ids(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    return column.fill_null(l2book.NO_ID).to_numpy().astype(np.int64, copy=False)


def replay_depth(updates: DepthUpdates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the book over the updates: (ts_ns, recv_ns, summaries) of those with a valid book, the
    times being the latest so far (see the module doc)."""
    m = len(updates)
    summaries = np.full((m, l2book.SUMMARY_SIZE), np.nan)
    outcome = np.zeros(m, dtype=np.int64)
    book = l2book.L2Book()
    l2book.replay(book.keys, book.sizes, book.meta, updates.starts, updates.is_snapshot, updates.first_update_id,
                  updates.update_id, updates.prev_update_id, updates.side, updates.price, updates.qty,
                  summaries, outcome)
    counts = np.bincount(outcome, minlength=len(l2book.OUTCOMES))
    if counts[l2book.GAP]:
        log.warning("depth: %d sequence gap(s); the book was invalid until the next snapshot (%s)", counts[l2book.GAP],
                    dict(zip(l2book.OUTCOMES, counts.tolist(), strict=True)))
    applied = outcome == l2book.APPLIED
    ts = np.maximum.accumulate(updates.ts_ns) if m else updates.ts_ns
    recv = np.maximum.accumulate(updates.recv_ns) if m else updates.recv_ns
    return ts[applied], recv[applied], summaries[applied]


def merge_events(trades: pa.Table, quotes: pa.Table, depth: pa.Table | None = None) -> EventArrays:
    """Merge a trades, a quotes and (optionally) a depth table (store schemas) into one ordered stream."""
    depth_ts, depth_recv, summaries = replay_depth(depth_updates(depth if depth is not None else DEPTH.empty_table()))
    nt, nq, nd = trades.num_rows, quotes.num_rows, len(depth_ts)
    nan_t, nan_q, nan_d = np.full(nt, np.nan), np.full(nq, np.nan), np.full(nd, np.nan)
    ts = np.concatenate([_column(quotes, "ts_ns", np.int64), _column(trades, "ts_ns", np.int64), depth_ts])
    recv = np.concatenate([_column(quotes, "recv_ns", np.int64), _column(trades, "recv_ns", np.int64),
                           np.maximum(depth_recv, 0)])  # a missing receive time counts as 0, as for ticks
    kind = np.concatenate([np.full(nq, KIND_QUOTE, np.int64), np.full(nt, KIND_TRADE, np.int64),
                           np.full(nd, KIND_DEPTH, np.int64)])
    order = np.lexsort((kind, recv, ts))  # stable: depth events keep their sequence order on ties
    columns = {
        "price": np.concatenate([nan_q, _column(trades, "price", np.float64), nan_d]),
        "qty": np.concatenate([nan_q, _column(trades, "qty", np.float64), nan_d]),
        "side": np.concatenate([np.zeros(nq), _column(trades, "side", np.float64), np.zeros(nd)]),
        "bid": np.concatenate([_column(quotes, "bid_px", np.float64), nan_t, nan_d]),
        "bid_qty": np.concatenate([_column(quotes, "bid_qty", np.float64), nan_t, nan_d]),
        "ask": np.concatenate([_column(quotes, "ask_px", np.float64), nan_t, nan_d]),
        "ask_qty": np.concatenate([_column(quotes, "ask_qty", np.float64), nan_t, nan_d]),
        "depth_row": np.concatenate([np.full(nq + nt, -1, np.int64), np.arange(nd, dtype=np.int64)]),
    }
    return EventArrays(ts[order], kind[order], **{k: np.ascontiguousarray(v[order]) for k, v in columns.items()},
                       depth=summaries)


def events_from_batches(batches: Iterable[TickBatch], symbol: str | None = None) -> EventArrays:
    """The event stream of one symbol (default: the first one seen) from a source's batches;
    funding rows are not events of the feature stream."""
    tables: dict[Kind, list[pa.Table]] = {Kind.TRADES: [], Kind.QUOTES: [], Kind.DEPTH: []}
    schemas = {Kind.TRADES: TRADES, Kind.QUOTES: QUOTES, Kind.DEPTH: DEPTH}
    for batch in batches:
        symbol = batch.symbol if symbol is None else symbol
        if batch.symbol == symbol and batch.kind in tables:
            tables[batch.kind].append(batch.rows.select(list(schemas[batch.kind].names)))
    trades, quotes, depth = (pa.concat_tables(tables[k]) if tables[k] else schemas[k].empty_table() for k in schemas)
    return merge_events(trades, quotes, depth)
