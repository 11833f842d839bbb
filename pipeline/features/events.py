"""The event stream the features run on: trades and top-of-book quotes of one symbol, merged.

Order: exchange time, then receive time, then quotes before trades. The replay feed, the backtest
and feature extraction all build the stream here, so they see the same sequence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.data.schemas import QUOTES, TRADES, Kind
from pipeline.data.sources.base import TickBatch
from pipeline.features.core import KIND_QUOTE, KIND_TRADE


@dataclass(frozen=True)
class EventArrays:
    ts_ns: np.ndarray  # int64
    kind: np.ndarray  # int64: KIND_QUOTE or KIND_TRADE
    price: np.ndarray  # float64, trades (NaN on quotes)
    qty: np.ndarray
    side: np.ndarray  # float64 +1 / -1 / 0
    bid: np.ndarray  # float64, quotes (NaN on trades)
    bid_qty: np.ndarray
    ask: np.ndarray
    ask_qty: np.ndarray

    def __len__(self) -> int:
        return len(self.ts_ns)

    def slice(self, start: int, stop: int | None = None) -> EventArrays:
        return EventArrays(*(getattr(self, name)[start:stop] for name in self.__dataclass_fields__))

    def columns(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)


def _column(table: pa.Table, name: str, dtype) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        column = column.fill_null(np.nan if np.dtype(dtype).kind == "f" else 0)
    return column.to_numpy().astype(dtype, copy=False)


def merge_events(trades: pa.Table, quotes: pa.Table) -> EventArrays:
    """Merge a trades table and a quotes table (store schemas) into one ordered event stream."""
    nt, nq = trades.num_rows, quotes.num_rows
    nan_t, nan_q = np.full(nt, np.nan), np.full(nq, np.nan)
    ts = np.concatenate([_column(quotes, "ts_ns", np.int64), _column(trades, "ts_ns", np.int64)])
    recv = np.concatenate([_column(quotes, "recv_ns", np.int64), _column(trades, "recv_ns", np.int64)])
    kind = np.concatenate([np.full(nq, KIND_QUOTE, np.int64), np.full(nt, KIND_TRADE, np.int64)])
    order = np.lexsort((kind, recv, ts))
    columns = {
        "price": np.concatenate([nan_q, _column(trades, "price", np.float64)]),
        "qty": np.concatenate([nan_q, _column(trades, "qty", np.float64)]),
        "side": np.concatenate([np.zeros(nq), _column(trades, "side", np.float64)]),
        "bid": np.concatenate([_column(quotes, "bid_px", np.float64), nan_t]),
        "bid_qty": np.concatenate([_column(quotes, "bid_qty", np.float64), nan_t]),
        "ask": np.concatenate([_column(quotes, "ask_px", np.float64), nan_t]),
        "ask_qty": np.concatenate([_column(quotes, "ask_qty", np.float64), nan_t]),
    }
    return EventArrays(ts[order], kind[order], **{k: np.ascontiguousarray(v[order]) for k, v in columns.items()})


def events_from_batches(batches: Iterable[TickBatch], symbol: str | None = None) -> EventArrays:
    """The event stream of one symbol (default: the first one seen) from a source's batches;
    depth and funding rows are not events of the feature stream."""
    trades: list[pa.Table] = []
    quotes: list[pa.Table] = []
    for batch in batches:
        symbol = batch.symbol if symbol is None else symbol
        if batch.symbol != symbol:
            continue
        if batch.kind == Kind.TRADES:
            trades.append(batch.rows.select(list(TRADES.names)))
        elif batch.kind == Kind.QUOTES:
            quotes.append(batch.rows.select(list(QUOTES.names)))
    return merge_events(
        pa.concat_tables(trades) if trades else TRADES.empty_table(),
        pa.concat_tables(quotes) if quotes else QUOTES.empty_table(),
    )
