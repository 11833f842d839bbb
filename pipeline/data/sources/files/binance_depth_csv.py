"""Binance historical order-book CSV (plain or gzip):
``symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu``.

``timestamp`` ms; ``side`` b/a; ``update_type`` snap (snapshot rows) or set (diff rows); ``qty``
absolute (0 removes the level); ``pu`` the previous last_update_id (-1 in snapshots -> null).
The file names a market id but not the market: ``exchange`` defaults to ``binanceusdm``; with
``binancecoinm`` the quantities are contracts and are converted to base coin.
"""

from __future__ import annotations

import csv
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.data.schemas import Kind
from pipeline.data.sources.base import TickBatch
from pipeline.data.sources.files._common import (
    BadLines,
    Columns,
    Context,
    attach_rejects,
    binance_symbol,
    check_override,
    home_by_symbol,
    open_text,
    raw_lines,
    table,
    to_base,
)
from pipeline.data.symbols import coin_m_contract_usd
from pipeline.errors import SourceError

DEFAULT_EXCHANGE = "binanceusdm"
FIELDS = ("symbol", "timestamp", "first_update_id", "last_update_id", "side", "update_type", "price", "qty")
SIDES = {"b": 1, "bid": 1, "a": -1, "ask": -1}
UPDATE_TYPES = {"snap": True, "set": False}


def parse(ctx: Context) -> list[TickBatch]:
    exchange = ctx.exchange or DEFAULT_EXCHANGE
    bad = BadLines(ctx)
    groups: dict[str, dict[str, list[Any]]] = {}
    with open_text(ctx.path) as text:
        reader = csv.reader(text)
        header = [name.strip() for name in next(reader, [])]
        at = {name: header.index(name) for name in FIELDS}
        pu_at = header.index("pu") if "pu" in header else None
        for row in reader:
            number = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            try:
                if len(row) != len(header):
                    raise ValueError(f"{len(row)} fields, the header has {len(header)}")
                side = SIDES.get(row[at["side"]].strip().lower())
                snap = UPDATE_TYPES.get(row[at["update_type"]].strip().lower())
                if side is None:
                    raise ValueError(f"bad side {row[at['side']]!r}")
                if snap is None:
                    raise ValueError(f"bad update_type {row[at['update_type']]!r}")
                prev = row[pu_at].strip() if pu_at is not None else ""
            except ValueError as exc:
                bad.add(number, str(exc), ",".join(row), (None, None))
                continue
            group = groups.setdefault(row[at["symbol"]].strip().upper(), {})
            for name in ("timestamp", "first_update_id", "last_update_id", "price", "qty"):
                group.setdefault(name, []).append(row[at[name]])
            group.setdefault("side", []).append(side)
            group.setdefault("snap", []).append(snap)
            group.setdefault("pu", []).append(None if prev in ("", "-1") else prev)
            group.setdefault("line", []).append(number)
    batches = []
    for market_id, group in groups.items():
        try:
            symbol = binance_symbol(market_id, exchange)
            override = None if ctx.symbol is None else binance_symbol(ctx.symbol, exchange)
        except SourceError as exc:
            raise ctx.error(str(exc)) from None
        check_override(ctx, "symbol", symbol, override)
        contract_usd = coin_m_contract_usd(symbol) if symbol.endswith(":" + symbol.split("/")[0]) else None
        batches.append(TickBatch(exchange, symbol, Kind.DEPTH, _rows(ctx, group, bad, symbol, contract_usd)))
    return attach_rejects(batches, bad, home_by_symbol)


def _rows(ctx: Context, group: dict[str, list[Any]], bad: BadLines, symbol: str, contract_usd: float | None) -> pa.Table:
    cols = Columns()
    price = cols.floats(group["price"], "price")
    columns = {
        "ts_ns": cols.ms_to_ns(group["timestamp"], "timestamp"),
        "recv_ns": pa.nulls(len(price), pa.int64()),
        "update_id": cols.ints(group["last_update_id"], "last_update_id"),
        "first_update_id": cols.ints(group["first_update_id"], "first_update_id", nullable=True),
        "prev_update_id": cols.ints(group["pu"], "pu", nullable=True),
        "is_snapshot": np.array(group["snap"], dtype=bool),
        "side": np.array(group["side"], dtype=np.int8),
        "price": price,
        "qty": to_base(cols.floats(group["qty"], "qty"), price, contract_usd),
    }
    keep = cols.keep_mask(len(price))
    if keep is not None:
        lines = group["line"]
        raws = raw_lines(ctx.path, {lines[index] for index in cols.bad})
        for index, reason in sorted(cols.bad.items()):
            bad.add(lines[index], reason, raws.get(lines[index], ""), (symbol, Kind.DEPTH))
    return table(Kind.DEPTH, columns, keep)
