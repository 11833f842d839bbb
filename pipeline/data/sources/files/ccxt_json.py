"""A JSON array (plain or gzip) of ccxt unified trade dicts, as ``fetch_trades`` returns them and
freqtrade stores them: ``timestamp`` (ms), ``symbol`` (unified), ``id`` (string), ``side``
(taker side), ``price``, ``amount`` (base coin).

The file names the symbol but not the exchange: ``exchange`` defaults to ``binance``. Items are
numbered from 1 in error messages and rejects ("unparseable item N").
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.data.schemas import Kind
from pipeline.data.sources.base import TickBatch
from pipeline.data.sources.files._common import (
    BadLines,
    Columns,
    Context,
    attach_rejects,
    check_override,
    home_by_symbol,
    read_all,
    side_codes,
    table,
    trade_id,
)

try:
    import orjson

    loads = orjson.loads

    def dumps(value: Any) -> str:
        return orjson.dumps(value, default=str).decode()

except ImportError:  # pragma: no cover - orjson is optional
    import json

    loads = json.loads

    def dumps(value: Any) -> str:
        return json.dumps(value, default=str)


DEFAULT_EXCHANGE = "binance"


def parse(ctx: Context) -> list[TickBatch]:
    try:
        items = loads(read_all(ctx.path))
    except ValueError as exc:
        raise ctx.error(f"invalid JSON ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(items, list):
        raise ctx.error("not a JSON array of ccxt trades")
    exchange = ctx.exchange or DEFAULT_EXCHANGE
    bad = BadLines(ctx, unit="item")
    groups: dict[str, dict[str, list[Any]]] = {}
    for number, item in enumerate(items, start=1):
        try:
            symbol = item.get("symbol") or ctx.symbol
            if not isinstance(symbol, str):
                raise ValueError("no symbol (pass symbol=)")
            values = (item["timestamp"], trade_id(item.get("id")), item["price"], item["amount"], item.get("side"))
        except (AttributeError, KeyError, ValueError, TypeError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())[:200]
            bad.add(number, reason, dumps(item), (item.get("symbol") if isinstance(item, dict) else None, Kind.TRADES))
            continue
        group = groups.setdefault(symbol, {"timestamp": [], "id": [], "price": [], "amount": [], "side": [], "item": []})
        for name, value in zip(("timestamp", "id", "price", "amount", "side"), values, strict=True):
            group[name].append(value)
        group["item"].append(number)
    batches = []
    for symbol, group in groups.items():
        check_override(ctx, "symbol", symbol, ctx.symbol)
        batches.append(TickBatch(exchange, symbol, Kind.TRADES, _rows(group, bad, items, symbol)))
    return attach_rejects(batches, bad, home_by_symbol)


def _rows(group: dict[str, list[Any]], bad: BadLines, items: list[Any], symbol: str) -> pa.Table:
    cols = Columns()
    columns = {
        "ts_ns": cols.ms_to_ns(group["timestamp"], "timestamp"),
        "recv_ns": pa.nulls(len(group["id"]), pa.int64()),
        "trade_id": pa.array(group["id"], pa.int64()),
        "price": cols.floats(group["price"], "price"),
        "qty": cols.floats(group["amount"], "amount"),
        "side": side_codes(group["side"], "buy", "sell"),
    }
    keep = cols.keep_mask(len(group["id"]))
    for index, reason in sorted(cols.bad.items()):
        number = group["item"][index]
        bad.add(number, reason, dumps(items[number - 1]), (symbol, Kind.TRADES))
    return table(Kind.TRADES, columns, keep)
