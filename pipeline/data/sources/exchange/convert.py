"""ccxt unified structures (trades, order books, tickers, funding rates) to normalised rows.

Only normalisation happens here: units (ms -> ns, contracts -> base coin), sides and ids. Bad
values (a null price, a zero size) pass through for the quality step; only what cannot be put in
a column at all (a trade id that is not an integer) becomes a reject with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from pipeline.data.schemas import EXEC_TYPE, SCHEMAS, Kind, conform
from pipeline.data.sources.base import TickBatch, rejects_table, row_json

NS_PER_MS = 1_000_000
SIDES = {"buy": 1, "sell": -1}

Row = dict[str, Any]


def ms_to_ns(ms: Any) -> int | None:
    """ccxt millisecond timestamp (int, float or numeric string) to int ns; None stays None."""
    if ms is None:
        return None
    try:
        return int(ms) * NS_PER_MS
    except (TypeError, ValueError):
        try:
            return round(float(ms) * NS_PER_MS)
        except (TypeError, ValueError, OverflowError):
            return None


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def base_qty(market: Mapping[str, Any], amount: Any, price: Any) -> float | None:
    """An amount in ccxt units (base coin for spot, contracts for derivatives) in base coin.

    Linear contracts: ``contracts * contractSize`` (size in base coin). Inverse (coin-margined)
    contracts are worth ``contractSize`` quote (USD) each, so ``contracts * contractSize / price``.
    """
    qty = _float(amount)
    if qty is None or not market.get("contract"):
        return qty
    size = _float(market.get("contractSize"))
    size = 1.0 if size is None else size
    if market.get("inverse"):
        px = _float(price)
        if px is None or not px > 0:
            return math.nan  # no price, no conversion: the quality step quarantines it
        return qty * size / px
    return qty * size


def trade_row(trade: Mapping[str, Any], market: Mapping[str, Any], recv_ns: int) -> Row | str:
    """One TRADES row, or the reason the trade cannot be stored."""
    raw_id = trade.get("id")
    try:
        trade_id = int(raw_id)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return f"trade id {raw_id!r} is not an integer"
    info = trade.get("info")
    exec_type = info.get("X") if isinstance(info, Mapping) else None
    price = _float(trade.get("price"))
    return {
        "ts_ns": ms_to_ns(trade.get("timestamp")),
        "recv_ns": recv_ns,
        "trade_id": trade_id,
        "price": price,
        "qty": base_qty(market, trade.get("amount"), price),
        "side": SIDES.get(str(trade.get("side") or "").lower(), 0),
        EXEC_TYPE: None if exec_type is None else str(exec_type),
    }


def _level(entry: Any) -> tuple[float | None, Any]:
    if isinstance(entry, Sequence) and len(entry) >= 2:
        return _float(entry[0]), entry[1]
    return None, None


def book_rows(
    book: Mapping[str, Any], market: Mapping[str, Any], depth: int, recv_ns: int
) -> tuple[Row, list[Row]]:
    """A ccxt order book as one QUOTES row (top of book) and DEPTH snapshot rows (top ``depth``).

    ts_ns is the book's exchange timestamp, or recv_ns where the exchange gives none (Binance
    spot). update_id is ccxt's ``nonce`` (Binance lastUpdateId / u), or ts_ns where there is none.
    """
    ts_ns = ms_to_ns(book.get("timestamp"))
    ts_ns = recv_ns if ts_ns is None else ts_ns
    nonce = book.get("nonce")
    update_id = ts_ns if nonce is None else int(nonce)
    bids = list(book.get("bids") or [])[:depth]
    asks = list(book.get("asks") or [])[:depth]
    depth_rows: list[Row] = []
    for side, levels in ((1, bids), (-1, asks)):
        for entry in levels:
            price, amount = _level(entry)
            depth_rows.append(
                {
                    "ts_ns": ts_ns,
                    "recv_ns": recv_ns,
                    "update_id": update_id,
                    "first_update_id": None,
                    "prev_update_id": None,
                    "is_snapshot": True,
                    "side": side,
                    "price": price,
                    "qty": base_qty(market, amount, price),
                }
            )
    bid_px, bid_amount = _level(bids[0]) if bids else (None, None)
    ask_px, ask_amount = _level(asks[0]) if asks else (None, None)
    quote = {
        "ts_ns": ts_ns,
        "recv_ns": recv_ns,
        "update_id": update_id,
        "bid_px": bid_px,
        "bid_qty": base_qty(market, bid_amount, bid_px),
        "ask_px": ask_px,
        "ask_qty": base_qty(market, ask_amount, ask_px),
    }
    return quote, depth_rows


def bidask_row(ticker: Mapping[str, Any], market: Mapping[str, Any], recv_ns: int) -> Row:
    """A ccxt ticker from a best-bid/ask stream (Binance bookTicker) as a QUOTES row.

    ts_ns prefers the transaction time ``T`` of the raw message (ccxt's ``timestamp`` is the event
    time ``E``), then ccxt's timestamp, then recv_ns (Binance spot bookTicker has no time at all).
    """
    info = ticker.get("info")
    info = info if isinstance(info, Mapping) else {}
    ts_ns = ms_to_ns(info.get("T"))
    if ts_ns is None:
        ts_ns = ms_to_ns(ticker.get("timestamp"))
    update_id = info.get("u")
    bid, ask = _float(ticker.get("bid")), _float(ticker.get("ask"))
    return {
        "ts_ns": recv_ns if ts_ns is None else ts_ns,
        "recv_ns": recv_ns,
        "update_id": None if update_id is None else int(update_id),
        "bid_px": bid,
        "bid_qty": base_qty(market, ticker.get("bidVolume"), bid),
        "ask_px": ask,
        "ask_qty": base_qty(market, ticker.get("askVolume"), ask),
    }


def funding_row(rate: Mapping[str, Any], recv_ns: int) -> Row:
    """A ccxt funding-rate structure as a FUNDING row (``fundingTimestamp`` is the next funding)."""
    ts_ns = ms_to_ns(rate.get("timestamp"))
    return {
        "ts_ns": recv_ns if ts_ns is None else ts_ns,
        "recv_ns": recv_ns,
        "mark_px": _float(rate.get("markPrice")),
        "index_px": _float(rate.get("indexPrice")),
        "funding_rate": _float(rate.get("fundingRate")),
        "next_funding_ns": ms_to_ns(rate.get("fundingTimestamp")),
    }


class RowBuffer:
    """Rows and rejects gathered over a run, per (symbol, kind), in arrival order."""

    def __init__(self, exchange: str, source: str) -> None:
        self.exchange = exchange
        self.source = source
        self._rows: dict[tuple[str, Kind], list[Row]] = {}
        self._rejects: dict[tuple[str, Kind], list[tuple[str, str]]] = {}

    def add(self, symbol: str, kind: Kind, row: Row) -> None:
        self._rows.setdefault((symbol, kind), []).append(row)

    def extend(self, symbol: str, kind: Kind, rows: list[Row]) -> None:
        self._rows.setdefault((symbol, kind), []).extend(rows)

    def reject(self, symbol: str, kind: Kind, reason: str, raw: Any) -> None:
        self._rejects.setdefault((symbol, kind), []).append((reason, row_json(raw)))

    def batches(self, symbols: Sequence[str]) -> Iterator[TickBatch]:
        """One batch per (symbol, kind) that has rows or rejects, symbols in the given order."""
        for symbol in symbols:
            for kind in Kind:
                rows = self._rows.get((symbol, kind), [])
                rejects = self._rejects.get((symbol, kind), [])
                if not rows and not rejects:
                    continue
                yield TickBatch(
                    exchange=self.exchange,
                    symbol=symbol,
                    kind=kind,
                    rows=to_table(kind, rows),
                    rejects=rejects_table(self.source, rejects),
                )


def to_table(kind: Kind, rows: list[Row]) -> pa.Table:
    schema = SCHEMAS[kind]
    columns = {f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in schema}
    if kind is Kind.TRADES and any(r.get(EXEC_TYPE) is not None for r in rows):
        columns[EXEC_TYPE] = pa.array([r.get(EXEC_TYPE) for r in rows], type=pa.string())
    return conform(kind, pa.table(columns))

