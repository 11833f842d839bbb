"""Tardis.dev normalised CSV (plain or gzip): trades, quotes, book_snapshot_N, incremental_book_L2.

Columns start ``exchange,symbol,timestamp,local_timestamp``; both times are MICROseconds
(``timestamp`` exchange time -> ts_ns, ``local_timestamp`` Tardis receive time -> recv_ns).
Exchanges map to ccxt ids through ``symbols.EXCHANGE_ALIASES``; amounts are converted to base
coin where the venue quotes them in USD or in contracts (see ``_market``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.data.schemas import Kind
from pipeline.data.sources.base import TickBatch
from pipeline.data.sources.files._common import (
    NS_PER_US,
    BadLines,
    Columns,
    Context,
    attach_rejects,
    check_override,
    home_by_symbol,
    open_text,
    raw_lines,
    side_codes,
    table,
    to_base,
    trade_id,
)
from pipeline.data.sources.files.detect import tardis_kind
from pipeline.data.symbols import EXCHANGE_ALIASES, binance_unified, coin_m_contract_usd
from pipeline.errors import SourceError

_BOOK_SIDES = {"bid": 1, "bids": 1, "ask": -1, "asks": -1}  # anything else: 0, quarantined by quality
_LEVEL = re.compile(r"^(asks|bids)\[(\d+)\]\.(price|amount)$")


@dataclass(frozen=True)
class _Market:
    exchange: str  # ccxt id
    symbol: str  # ccxt unified
    market_id: str  # as Tardis names it
    contract_usd: float | None  # None: amounts in base coin; else USD per contract (1.0 = USD amounts)


def _market(ctx: Context, vendor: str, market_id: str) -> _Market:
    """Tardis (exchange, symbol) -> ccxt ids and the amount unit."""
    exchange = EXCHANGE_ALIASES.get(vendor)
    if exchange is None:
        raise ctx.error(f"unsupported Tardis exchange {vendor!r}")
    upper = market_id.upper()
    try:
        if vendor == "binance-futures":
            return _Market(exchange, binance_unified(upper, "usdm"), market_id, None)
        if vendor == "binance-delivery":  # COIN-M: amounts in contracts
            symbol = binance_unified(upper, "coinm")
            return _Market(exchange, symbol, market_id, coin_m_contract_usd(symbol))
        if vendor == "binance":
            return _Market(exchange, binance_unified(upper, "spot"), market_id, None)
    except SourceError as exc:
        raise ctx.error(str(exc)) from None
    if vendor == "bitmex" and upper == "XBTUSD":  # inverse perpetual, contracts of 1 USD
        return _Market(exchange, "BTC/USD:BTC", market_id, 1.0)
    if vendor == "deribit" and upper.endswith("-PERPETUAL") and "_" not in upper:  # inverse, amounts in USD
        base = upper.removesuffix("-PERPETUAL")
        return _Market(exchange, f"{base}/USD:{base}", market_id, 1.0)
    if vendor == "huobi-dm-swap" and upper.endswith("-USD"):  # coin-margined swap, contracts (BTC 100 USD)
        base = upper.removesuffix("-USD")
        symbol = f"{base}/USD:{base}"
        return _Market(exchange, symbol, market_id, coin_m_contract_usd(symbol))
    raise ctx.error(f"unsupported Tardis symbol {market_id!r} on {vendor!r} (its amount unit is not known)")


class _Group:
    """Rows of one (exchange, symbol) in one file, as column lists (values still text)."""

    def __init__(self, market: _Market) -> None:
        self.market = market
        self.columns: dict[str, list[Any]] = {}
        self.lines: list[int] = []


def parse(ctx: Context) -> list[TickBatch]:
    bad = BadLines(ctx)
    with open_text(ctx.path) as text:
        reader = csv.reader(text)
        header = [name.strip() for name in next(reader, [])]
        data_type = tardis_kind(ctx.path, header)
        row_values = _ROW_PARSERS[data_type](header)
        width = len(header)
        markets: dict[tuple[str, str], _Market] = {}
        groups: dict[_Market, _Group] = {}
        for row in reader:
            number = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            try:
                if len(row) != width:
                    raise ValueError(f"{len(row)} fields, the header has {width}")
                key = (row[0], row[1])
                market = markets.get(key)
                if market is None:
                    market = markets[key] = _market(ctx, row[0], row[1])
                group = groups.get(market)
                if group is None:
                    group = groups[market] = _Group(market)
                values = row_values(row)
            except SourceError:
                raise
            except Exception as exc:  # noqa: BLE001
                bad.add(number, " ".join(str(exc).split())[:200], ",".join(row), (None, None))
                continue
            for name, value in values.items():
                group.columns.setdefault(name, []).extend(value)
            group.lines.extend([number] * _row_count(values))
    batches = []
    for group in groups.values():
        market = group.market
        check_override(ctx, "exchange", market.exchange, ctx.exchange)
        if ctx.symbol != market.market_id:  # the override may use Tardis' own name
            check_override(ctx, "symbol", market.symbol, ctx.symbol)
        kind, rows = _BUILDERS[data_type](group, bad, ctx)
        batches.append(TickBatch(market.exchange, market.symbol, kind, rows))
    return attach_rejects(batches, bad, home_by_symbol)


def _row_count(values: dict[str, list[Any]]) -> int:
    return len(next(iter(values.values())))


# --- per data type: a row to column values, then column lists to a table ---


def _trade_row(header: list[str]) -> Callable[[list[str]], dict[str, list[Any]]]:
    at = {name: header.index(name) for name in ("timestamp", "local_timestamp", "id", "side", "price", "amount")}

    def values(row: list[str]) -> dict[str, list[Any]]:
        return {name: [row[index]] for name, index in at.items()}

    return values


def _quote_row(header: list[str]) -> Callable[[list[str]], dict[str, list[Any]]]:
    names = ("timestamp", "local_timestamp", "bid_price", "bid_amount", "ask_price", "ask_amount")
    at = {name: header.index(name) for name in names}

    def values(row: list[str]) -> dict[str, list[Any]]:
        return {name: [row[index]] for name, index in at.items()}

    return values


def _snapshot_row(header: list[str]) -> Callable[[list[str]], dict[str, list[Any]]]:
    """A book_snapshot_N row -> one row per present level (empty cells: fewer levels)."""
    levels: dict[tuple[str, int], dict[str, int]] = {}
    for index, name in enumerate(header):
        match = _LEVEL.match(name)
        if match:
            levels.setdefault((match.group(1), int(match.group(2))), {})[match.group(3)] = index
    ordered = sorted(((side, depth), at) for (side, depth), at in levels.items() if {"price", "amount"} <= set(at))
    ts_at, local_at = header.index("timestamp"), header.index("local_timestamp")

    def values(row: list[str]) -> dict[str, list[Any]]:
        present = [(side, at) for (side, _), at in ordered if row[at["price"]].strip()]
        return {
            "timestamp": [row[ts_at]] * len(present),
            "local_timestamp": [row[local_at]] * len(present),
            "side": [side for side, _ in present],
            "price": [row[at["price"]] for _, at in present],
            "amount": [row[at["amount"]] for _, at in present],
        }

    return values


def _incremental_row(header: list[str]) -> Callable[[list[str]], dict[str, list[Any]]]:
    names = ("timestamp", "local_timestamp", "is_snapshot", "side", "price", "amount")
    at = {name: header.index(name) for name in names}

    def values(row: list[str]) -> dict[str, list[Any]]:
        flag = row[at["is_snapshot"]].strip().lower()
        if flag not in ("true", "false"):
            raise ValueError(f"bad is_snapshot {flag!r}")
        out = {name: [row[index]] for name, index in at.items()}
        out["is_snapshot"] = [flag == "true"]
        return out

    return values


_ROW_PARSERS = {
    "trades": _trade_row,
    "quotes": _quote_row,
    "book_snapshot": _snapshot_row,
    "incremental_book_L2": _incremental_row,
}


def _times(cols: Columns, group: _Group) -> tuple[pa.Array, pa.Array]:
    return (
        cols.scaled(group.columns["timestamp"], "timestamp", NS_PER_US),
        cols.scaled(group.columns["local_timestamp"], "local_timestamp", NS_PER_US, nullable=True),
    )


def _finish(cols: Columns, group: _Group, bad: BadLines, ctx: Context) -> np.ndarray | None:
    """Rows with unusable values become unparseable lines (rejects, or the file's error); a line
    is rejected whole, so every row it produced is dropped."""
    if not cols.bad:
        return None
    reasons: dict[int, str] = {}
    for index, reason in sorted(cols.bad.items()):
        reasons.setdefault(group.lines[index], reason)
    raws = raw_lines(ctx.path, set(reasons))
    for number, reason in sorted(reasons.items()):
        bad.add(number, reason, raws.get(number, ""), (group.market.symbol, None))
    return ~np.isin(np.array(group.lines), list(reasons))


def _build_trades(group: _Group, bad: BadLines, ctx: Context) -> tuple[Kind, pa.Table]:
    cols = Columns()
    ids = []
    for index, value in enumerate(group.columns["id"]):
        try:
            ids.append(trade_id(value))
        except ValueError as exc:
            cols.bad.setdefault(index, str(exc))
            ids.append(0)
    ts, recv = _times(cols, group)
    price = cols.floats(group.columns["price"], "price")
    columns = {
        "ts_ns": ts,
        "recv_ns": recv,
        "trade_id": pa.array(ids, pa.int64()),
        "price": price,
        "qty": to_base(cols.floats(group.columns["amount"], "amount"), price, group.market.contract_usd),
        "side": side_codes([value.strip().lower() for value in group.columns["side"]], "buy", "sell"),
    }
    return Kind.TRADES, table(Kind.TRADES, columns, _finish(cols, group, bad, ctx))


def _build_quotes(group: _Group, bad: BadLines, ctx: Context) -> tuple[Kind, pa.Table]:
    cols = Columns()
    ts, recv = _times(cols, group)
    # an empty side (no level) stays NaN: quality quarantines it with a reason
    bid = cols.floats(group.columns["bid_price"], "bid_price", empty_nan=True)
    ask = cols.floats(group.columns["ask_price"], "ask_price", empty_nan=True)
    contract_usd = group.market.contract_usd
    columns = {
        "ts_ns": ts,
        "recv_ns": recv,
        "update_id": pa.nulls(len(group.lines), pa.int64()),
        "bid_px": bid,
        "bid_qty": to_base(cols.floats(group.columns["bid_amount"], "bid_amount", empty_nan=True), bid, contract_usd),
        "ask_px": ask,
        "ask_qty": to_base(cols.floats(group.columns["ask_amount"], "ask_amount", empty_nan=True), ask, contract_usd),
    }
    return Kind.QUOTES, table(Kind.QUOTES, columns, _finish(cols, group, bad, ctx))


def _build_depth(group: _Group, bad: BadLines, ctx: Context) -> tuple[Kind, pa.Table]:
    """Tardis gives no update ids, so update_id is derived from the exchange timestamp: ts_ns for
    incremental rows (all rows of one update share it), and ts_ns + k for the k-th snapshot at
    the same timestamp in a book_snapshot_N file (rows of one snapshot share it)."""
    cols = Columns()
    ts, recv = _times(cols, group)
    price = cols.floats(group.columns["price"], "price")
    ts_ns = ts.to_numpy()
    if "is_snapshot" in group.columns:
        is_snapshot = np.array(group.columns["is_snapshot"], dtype=bool)
        update_id = ts_ns
    else:
        is_snapshot = np.ones(len(ts_ns), dtype=bool)
        update_id = ts_ns + _repeat_index(ts_ns, np.array(group.lines))
    side = np.array([_BOOK_SIDES.get(value.strip().lower(), 0) for value in group.columns["side"]], dtype=np.int8)
    columns = {
        "ts_ns": ts,
        "recv_ns": recv,
        "update_id": update_id,
        "first_update_id": pa.nulls(len(ts_ns), pa.int64()),
        "prev_update_id": pa.nulls(len(ts_ns), pa.int64()),
        "is_snapshot": is_snapshot,
        "side": side,
        "price": price,
        "qty": to_base(cols.floats(group.columns["amount"], "amount"), price, group.market.contract_usd),
    }
    return Kind.DEPTH, table(Kind.DEPTH, columns, _finish(cols, group, bad, ctx))


def _repeat_index(ts_ns: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """For each row, how many earlier snapshot lines had the same timestamp (0 for the first)."""
    out = np.zeros(len(ts_ns), dtype=np.int64)
    seen: dict[int, list[int]] = {}
    for index, (ts, line) in enumerate(zip(ts_ns.tolist(), lines.tolist(), strict=True)):
        lines_at = seen.setdefault(ts, [])
        if not lines_at or lines_at[-1] != line:
            lines_at.append(line)
        out[index] = len(lines_at) - 1
    return out


_BUILDERS = {
    "trades": _build_trades,
    "quotes": _build_quotes,
    "book_snapshot": _build_depth,
    "incremental_book_L2": _build_depth,
}
