"""Binance trades/quotes parquet (nautilus_trader's test layout).

* trades: ``timestamp`` (timestamp[ms, UTC]), ``trade_id``, ``price``, ``quantity`` (base coin),
  ``buyer_maker`` (the STRING "True"/"False", or a bool; True = the taker sold).
* quotes: ``timestamp``, ``symbol`` (unified, e.g. "BTC/USDT"; optional), ``ask_size``, ``ask``,
  ``bid_size``, ``bid``.

The files carry no receive time (recv_ns null) and no exchange: ``exchange`` defaults to
``binance`` (spot). The trades file names no symbol: it comes from the ``symbol`` override, else
from the file name's leading market id (``btcusdt-trades.parquet`` -> BTC/USDT). Quantities are
taken as base coin. Integer timestamps (instead of a timestamp type) are read as milliseconds.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.data.schemas import Kind
from pipeline.data.sources.base import TickBatch, row_json
from pipeline.data.sources.files._common import NS_PER_MS, BadLines, Context, attach_rejects, binance_symbol, home_by_symbol, table
from pipeline.data.sources.files.detect import parquet_kind
from pipeline.errors import SourceError

DEFAULT_EXCHANGE = "binance"
_NAME_MARKET_ID = re.compile(r"^([A-Za-z0-9]+)[-_.]")


def parse(ctx: Context) -> list[TickBatch]:
    kind = parquet_kind(ctx.path)
    try:
        data = pq.read_table(ctx.path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for damaged files
        raise ctx.error(f"corrupt parquet ({' '.join(str(exc).split())[:200]})") from None
    exchange = ctx.exchange or DEFAULT_EXCHANGE
    bad = BadLines(ctx, unit="row")
    if kind == "trades":
        batches = [TickBatch(exchange, _file_symbol(ctx, exchange), Kind.TRADES, _trades(ctx, data, bad))]
    else:
        batches = []
        override = _override(ctx, exchange)
        if "symbol" in data.column_names:
            for symbol in pc.unique(data.column("symbol")).to_pylist():
                if symbol is None:
                    continue
                if override is not None and override != symbol:
                    raise ctx.error(f"the file holds symbol {symbol!r} but symbol={override!r} was given")
                part = data.filter(pc.equal(data.column("symbol"), symbol))
                batches.append(TickBatch(exchange, symbol, Kind.QUOTES, _quotes(ctx, part)))
            missing = data.filter(pc.is_null(data.column("symbol")))
            if missing.num_rows:
                batches.append(TickBatch(exchange, _file_symbol(ctx, exchange), Kind.QUOTES, _quotes(ctx, missing)))
        else:
            batches.append(TickBatch(exchange, _file_symbol(ctx, exchange), Kind.QUOTES, _quotes(ctx, data)))
    return attach_rejects(batches, bad, home_by_symbol)


def _override(ctx: Context, exchange: str) -> str | None:
    if ctx.symbol is None:
        return None
    try:
        return binance_symbol(ctx.symbol, exchange)
    except SourceError as exc:
        raise ctx.error(str(exc)) from None


def _file_symbol(ctx: Context, exchange: str) -> str:
    override = _override(ctx, exchange)
    if override is not None:
        return override
    match = _NAME_MARKET_ID.match(ctx.path.name)
    if match:
        try:
            return binance_symbol(match.group(1).upper(), exchange)
        except SourceError:
            pass
    raise ctx.error("the file names no symbol and its name does not start with one: pass symbol=")


def _timestamps_ns(ctx: Context, column: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        if pa.types.is_timestamp(column.type):
            return column.cast(pa.timestamp("ns", tz=column.type.tz)).cast(pa.int64())
        if pa.types.is_integer(column.type):
            return pc.multiply_checked(column.cast(pa.int64()), NS_PER_MS)
    except pa.ArrowInvalid as exc:
        raise ctx.error(f"timestamp out of range ({exc})") from None
    raise ctx.error(f"unsupported timestamp type {column.type}")


def _floats(data: pa.Table, name: str) -> pa.ChunkedArray:
    return data.column(name).cast(pa.float64()).fill_null(np.nan)  # NaN: quality quarantines it


def _trades(ctx: Context, data: pa.Table, bad: BadLines) -> pa.Table:
    maker = pc.utf8_lower(data.column("buyer_maker").cast(pa.string())).to_numpy(zero_copy_only=False)
    side = np.where(maker == "true", -1, np.where(maker == "false", 1, 0)).astype(np.int8)
    trade_ids = data.column("trade_id").cast(pa.int64())
    keep = None
    if trade_ids.null_count:  # a trade without id cannot be stored (trade_id is its identity)
        missing = np.asarray(pc.is_null(trade_ids), dtype=bool)
        for index in np.flatnonzero(missing):
            bad.add(int(index) + 1, "missing trade_id", row_json(data.slice(int(index), 1).to_pylist()[0]))
        keep = ~missing
    columns = {
        "ts_ns": _timestamps_ns(ctx, data.column("timestamp")),
        "recv_ns": pa.nulls(data.num_rows, pa.int64()),
        "trade_id": trade_ids.fill_null(0),
        "price": _floats(data, "price"),
        "qty": _floats(data, "quantity"),
        "side": side,
    }
    return table(Kind.TRADES, columns, keep)


def _quotes(ctx: Context, data: pa.Table) -> pa.Table:
    columns = {
        "ts_ns": _timestamps_ns(ctx, data.column("timestamp")),
        "recv_ns": pa.nulls(data.num_rows, pa.int64()),
        "update_id": pa.nulls(data.num_rows, pa.int64()),
        "bid_px": _floats(data, "bid"),
        "bid_qty": _floats(data, "bid_size"),
        "ask_px": _floats(data, "ask"),
        "ask_qty": _floats(data, "ask_size"),
    }
    return table(Kind.QUOTES, columns)
