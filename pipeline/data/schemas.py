"""Arrow schemas of the normalised tick data.

Conventions (every source converts to these):
- ``ts_ns``: exchange event time, integer nanoseconds since the Unix epoch (UTC). For trades the
  exchange's trade/match time, for quotes and depth the exchange's transaction time.
- ``recv_ns``: when the collector received the message, integer ns, its own clock (null if unknown).
- prices in quote currency; quantities in **base currency** (coin-margined contracts are converted
  with the contract size, so features never see contract units).
- ``side``: +1 buyer was the aggressor (taker bought), -1 seller was, 0 unknown. For depth rows,
  +1 bid and -1 ask.
- symbols in ccxt unified form (``BTC/USDT:USDT``), exchanges by ccxt id (``binanceusdm``).
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa


class Kind(StrEnum):
    TRADES = "trades"
    QUOTES = "quotes"
    DEPTH = "depth"
    FUNDING = "funding"


_TIME = [
    pa.field("ts_ns", pa.int64(), nullable=False),
    pa.field("recv_ns", pa.int64()),
]

TRADES = pa.schema(
    _TIME
    + [
        pa.field("trade_id", pa.int64(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("qty", pa.float64(), nullable=False),
        pa.field("side", pa.int8(), nullable=False),
    ]
)

QUOTES = pa.schema(
    _TIME
    + [
        pa.field("update_id", pa.int64()),
        pa.field("bid_px", pa.float64(), nullable=False),
        pa.field("bid_qty", pa.float64(), nullable=False),
        pa.field("ask_px", pa.float64(), nullable=False),
        pa.field("ask_qty", pa.float64(), nullable=False),
    ]
)

# One row per price level. A snapshot is several rows sharing ``update_id`` with is_snapshot=True;
# a diff's rows carry Binance's U/u/pu ids. qty is absolute; 0 removes the level.
DEPTH = pa.schema(
    _TIME
    + [
        pa.field("update_id", pa.int64(), nullable=False),
        pa.field("first_update_id", pa.int64()),
        pa.field("prev_update_id", pa.int64()),
        pa.field("is_snapshot", pa.bool_(), nullable=False),
        pa.field("side", pa.int8(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("qty", pa.float64(), nullable=False),
    ]
)

FUNDING = pa.schema(
    _TIME
    + [
        pa.field("mark_px", pa.float64()),
        pa.field("index_px", pa.float64()),
        pa.field("funding_rate", pa.float64()),
        pa.field("next_funding_ns", pa.int64()),
    ]
)

SCHEMAS: dict[Kind, pa.Schema] = {
    Kind.TRADES: TRADES,
    Kind.QUOTES: QUOTES,
    Kind.DEPTH: DEPTH,
    Kind.FUNDING: FUNDING,
}

# Columns that identify one row, for idempotent re-ingest: the same event ingested twice is
# stored once. Trades are identified by the exchange's trade id; the others by their content.
DEDUPE_KEYS: dict[Kind, tuple[str, ...]] = {
    Kind.TRADES: ("trade_id",),
    Kind.QUOTES: ("ts_ns", "update_id", "bid_px", "bid_qty", "ask_px", "ask_qty"),
    Kind.DEPTH: ("update_id", "is_snapshot", "side", "price", "qty"),
    Kind.FUNDING: ("ts_ns", "mark_px", "index_px", "funding_rate", "next_funding_ns"),
}

# Parsers may add this column to trades; quality checks read it and the store never sees it.
EXEC_TYPE = "exec_type"

QUARANTINE = pa.schema(
    [
        pa.field("ts_ns", pa.int64()),
        pa.field("recv_ns", pa.int64()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("row", pa.string(), nullable=False),  # the rejected row or line, as JSON/text
    ]
)


def empty(kind: Kind) -> pa.Table:
    return SCHEMAS[kind].empty_table()


def conform(kind: Kind, table: pa.Table) -> pa.Table:
    """Cast a parsed table to the kind's schema (column order and types), keeping EXEC_TYPE."""
    schema = SCHEMAS[kind]
    columns = [table.column(f.name).cast(f.type) for f in schema]
    fields = list(schema)
    if EXEC_TYPE in table.column_names:
        columns.append(table.column(EXEC_TYPE).cast(pa.string()))
        fields.append(pa.field(EXEC_TYPE, pa.string()))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))
