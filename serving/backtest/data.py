"""What a backtest replays: one symbol's merged event stream from the store over a time range, with
the history before it that the features need, and the funding rows of the range.

The stream is built by ``pipeline.features.events.merge_events``, the same function feature
extraction and the replay feed use, so a backtest sees exactly the sequence the models were
trained on.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.data.schemas import Kind
from pipeline.data.store import TickStore
from pipeline.errors import AutoscalpError
from pipeline.features.events import EventArrays, merge_events

_NS = 1_000_000_000
_NS_PER_DAY = 86_400 * _NS


class BadTimeError(AutoscalpError):
    """A --from/--to value that is not a time."""


def parse_time(value: str | None) -> int | None:
    """ISO-8601 (UTC unless an offset is given) or integer ns since the epoch."""
    if value is None or value == "":
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadTimeError(f"{value!r} is not a time: use ISO-8601 (2024-08-08T23:55:00Z) or ns since the epoch") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1_000_000) * 1_000


class NoReplayDataError(AutoscalpError):
    """The store holds no ticks of the symbol in the requested range."""


@dataclass(frozen=True)
class ReplayData:
    exchange: str
    symbol: str
    events: EventArrays  # warm-up history + the window
    start: int  # index of the window's first event: trading starts here
    start_ns: int
    end_ns: int
    funding: pa.Table  # the store's funding rows in the window (may be empty)
    fingerprint: str  # sha256 of the replayed arrays: the same data, the same fingerprint

    @property
    def window_events(self) -> int:
        return len(self.events) - self.start


def store_range(store: TickStore, exchange: str, symbol: str) -> tuple[int, int]:
    """First and last event time of a symbol's quotes in the store."""
    quotes = store.read(exchange, symbol, Kind.QUOTES)
    if not quotes.num_rows:
        raise NoReplayDataError(f"the store has no quotes of {exchange} {symbol}; ingest some first")
    ts = quotes.column("ts_ns").to_numpy()
    return int(ts[0]), int(ts[-1])


def load_replay(store: TickStore, exchange: str, symbol: str, start_ns: int, end_ns: int,
                warmup_s: float, depth: bool = False) -> ReplayData:  # fmt: skip
    """Events of ``[start_ns - warmup_s, end_ns)``; the window proper is ``[start_ns, end_ns)``.

    With ``depth`` (the model reads depth features) the store's depth updates join the stream, the
    book replayed from the latest snapshot before the read start (``merge_events``)."""
    if end_ns <= start_ns:
        raise NoReplayDataError(f"empty backtest window: end {end_ns} <= start {start_ns}")
    read_from = start_ns - int(warmup_s * _NS)
    trades = store.read(exchange, symbol, Kind.TRADES, read_from, end_ns)
    quotes = store.read(exchange, symbol, Kind.QUOTES, read_from, end_ns)
    if depth:
        events = merge_events(trades, quotes, depth_rows(store, exchange, symbol, read_from, end_ns))
        events = events.slice(int(np.searchsorted(events.ts_ns, read_from)))
    else:
        events = merge_events(trades, quotes)
    start = int(np.searchsorted(events.ts_ns, start_ns, side="left"))
    if start >= len(events):
        raise NoReplayDataError(f"the store has no ticks of {exchange} {symbol} between {start_ns} and {end_ns}")
    funding = store.read(exchange, symbol, Kind.FUNDING, start_ns, end_ns)
    return ReplayData(exchange, symbol, events, start, start_ns, end_ns, funding, events_fingerprint(events, start))


def depth_rows(store: TickStore, exchange: str, symbol: str, read_from: int, end_ns: int) -> pa.Table:
    """Depth rows from the latest snapshot at or before ``read_from`` (a book needs one) to ``end_ns``."""
    for lookback_ns in (_NS_PER_DAY, None):  # the day before first: cheap; else all of it
        since = None if lookback_ns is None else read_from - lookback_ns
        rows = store.read(exchange, symbol, Kind.DEPTH, since, end_ns)
        ts = rows.column("ts_ns").to_numpy()
        snapshots = ts[rows.column("is_snapshot").to_numpy(zero_copy_only=False) & (ts <= read_from)]
        if snapshots.size:
            return rows.filter(pc.greater_equal(rows["ts_ns"], int(snapshots.max())))
    return rows.filter(pc.greater_equal(rows["ts_ns"], read_from))  # no snapshot yet: the diffs wait for one


def events_fingerprint(events: EventArrays, start: int) -> str:
    digest = hashlib.sha256(str(start).encode())
    for column in events.columns():
        digest.update(np.ascontiguousarray(column).tobytes())
    return digest.hexdigest()


def exchange_of(store: TickStore, symbol: str) -> str:
    """The one exchange the store holds quotes of ``symbol`` from (say which when there are several)."""
    found = sorted({p.exchange for p in store.partitions() if p.symbol == symbol and p.kind == Kind.QUOTES})
    if not found:
        raise NoReplayDataError(f"the store has no quotes of {symbol}; ingest some first")
    if len(found) > 1:
        raise NoReplayDataError(f"{symbol} is stored from several exchanges ({', '.join(found)}): pass --exchange")
    return found[0]
