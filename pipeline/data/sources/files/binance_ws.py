"""Raw Binance websocket captures: gzip (or plain) text, one ``<local_receive_ns> <json>`` per line.

Handles the combined-stream envelope (``{"stream": "btcusdt@trade", "data": {...}}``) and bare
messages, for USD-M, COIN-M and spot:

* ``trade`` -> trades (ts from ``T``, side -1 when ``m``: the buyer was the maker, so the taker
  sold; ``exec_type`` from futures' ``X``, null for spot). Not filtered: quality quarantines
  non-MARKET executions.
* ``bookTicker`` -> quotes (ts from ``T``, else ``E``; spot has neither, see the clock offset).
* ``depthUpdate`` -> depth diff rows (one per level; ``U``/``u``/``pu`` ids, bids +1, asks -1).
* the REST depth snapshot line (no envelope, ``lastUpdateId``) -> depth rows with is_snapshot.
* ``markPriceUpdate`` -> funding rows. Other streams (aggTrade, kline, ...) and subscription
  acknowledgements are skipped: they are not ticks of a stored kind.

The market comes from the content: a ``_`` in the symbol (``BTCUSD_PERP``) is COIN-M, whose
quantities are contracts and are converted to base coin (contracts * contract_usd / price);
otherwise futures-only fields (trade ``X``, bookTicker ``e``, depth ``pu``, snapshot ``E``/``T``)
mean USD-M, and their absence spot.

Speed: lines are parsed with orjson when installed (json otherwise) into per-column Python
lists of the raw values (decimal strings stay strings); arrays are built and converted once
per column at the end, with a per-value fallback that finds the lines holding bad values.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.data.schemas import EXEC_TYPE, Kind
from pipeline.data.sources.base import TickBatch
from pipeline.data.sources.files._common import (
    MAX_MS,
    NS_PER_MS,
    BadLines,
    Columns,
    Context,
    attach_rejects,
    check_override,
    iter_line_blocks,
    raw_lines,
    table,
    to_base,
)
from pipeline.data.symbols import binance_unified, coin_m_contract_usd
from pipeline.errors import SourceError

try:
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is optional
    import json

    loads = json.loads

EXCHANGES = {"spot": "binance", "usdm": "binanceusdm", "coinm": "binancecoinm"}
_SYMBOL_IN_LINE = re.compile(rb'"s(?:ymbol)?":"([A-Za-z0-9_]+)"|"stream":"([a-z0-9_]+)@')
_KIND_IN_LINE = (
    (re.compile(rb'@trade"|"e":"trade"'), Kind.TRADES),
    (re.compile(rb'@bookTicker"|"e":"bookTicker"'), Kind.QUOTES),
    (re.compile(rb'@depth|"e":"depthUpdate"|"lastUpdateId"'), Kind.DEPTH),
    (re.compile(rb'@markPrice|"e":"markPriceUpdate"'), Kind.FUNDING),
)


class _Symbol:
    """Everything parsed for one exchange market id, column by column."""

    def __init__(self, market_id: str) -> None:
        if type(market_id) is not str or not market_id:
            raise ValueError(f"bad symbol {market_id!r}")
        self.market_id = market_id.upper()
        self.futures = False
        # one tuple per message (a single append per line is the cheapest), columns at the end
        self.trades: list[tuple[Any, ...]] = []  # T, recv, t, p, q, side, X, line
        self.quotes: list[tuple[Any, ...]] = []  # T|E|None, recv, u, b, B, a, A, line
        # depth: one entry per message, then the levels of all messages (bids then asks)
        self.d_ts: list[Any] = []
        self.d_recv: list[int] = []
        self.d_u: list[Any] = []
        self.d_first: list[Any] = []
        self.d_prev: list[Any] = []
        self.d_snap: list[bool] = []
        self.d_nbid: list[int] = []
        self.d_nask: list[int] = []
        self.d_line: list[int] = []
        self.d_px: list[Any] = []
        self.d_qty: list[Any] = []
        self.funding: list[tuple[Any, ...]] = []  # E, p, i, r, T, line

    @property
    def market(self) -> str:
        if "_" in self.market_id:
            return "coinm"
        return "usdm" if self.futures else "spot"

    def add_depth(self, number: int, recv: int, ts: Any, u: Any, first: Any, prev: Any, snap: bool, bids: Any, asks: Any) -> None:
        bid_px, bid_qty = _levels(bids)
        ask_px, ask_qty = _levels(asks)
        self.d_px.extend(bid_px)
        self.d_px.extend(ask_px)
        self.d_qty.extend(bid_qty)
        self.d_qty.extend(ask_qty)
        self.d_ts.append(ts)
        self.d_recv.append(recv)
        self.d_u.append(u)
        self.d_first.append(first)
        self.d_prev.append(prev)
        self.d_snap.append(snap)
        self.d_nbid.append(len(bid_px))
        self.d_nask.append(len(ask_px))
        self.d_line.append(number)


def _levels(levels: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    if type(levels) is not list:
        raise ValueError(f"bad price levels {str(levels)[:40]!r}")
    if not levels:
        return (), ()
    prices, quantities = zip(*levels, strict=True)  # ValueError unless every level is [px, qty]
    return prices, quantities


def parse(ctx: Context) -> list[TickBatch]:
    was_enabled = gc.isenabled()
    gc.disable()  # millions of small objects, none cyclic: the collector would only cost time
    try:
        return _Parser(ctx).run()
    finally:
        if was_enabled:
            gc.enable()


class _Parser:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.bad = BadLines(ctx)
        self.symbols: dict[str, _Symbol] = {}
        self.event_ms: list[int] = []  # exchange event time E of messages carrying it ...
        self.event_recv: list[int] = []  # ... and their local receive time, for the clock offset
        self.snapshots: list[tuple[int, int, dict[str, Any]]] = []
        self.deferred: list[tuple[int, str, tuple[str, Kind]]] = []  # bad values found after parsing

    def run(self) -> list[TickBatch]:
        self._read()
        offset_ns = self._clock_offset_ns()
        self._place_snapshots()
        batches: list[TickBatch] = []
        for acc in self.symbols.values():
            batches.extend(self._batches(acc, offset_ns))
        self._report_deferred()
        by_id = {acc.market_id: _unified(self.ctx, acc) for acc in self.symbols.values()}
        return attach_rejects(batches, self.bad, lambda hint, found: _home(hint, found, by_id))

    # --- pass 1: lines to column lists ---

    def _read(self) -> None:
        symbols = self.symbols
        event_ms, event_recv = self.event_ms, self.event_recv
        for first, block in iter_line_blocks(self.ctx.path):
            for number, line in enumerate(block, first):
                try:
                    head, body = line.split(b" ", 1)
                    recv = int(head)
                    msg = loads(body)
                    data = msg["data"] if "stream" in msg else msg
                    event = data.get("e")
                    if event == "trade":
                        ts, trade_id, price, qty, maker, market_id = data["T"], data["t"], data["p"], data["q"], data["m"], data["s"]
                        if maker is True:
                            side = -1
                        elif maker is False:
                            side = 1
                        else:
                            raise ValueError(f"bad m {maker!r}")
                        exec_type = data.get("X")
                        if exec_type is not None and type(exec_type) is not str:
                            raise ValueError(f"bad X {exec_type!r}")
                        acc = symbols.get(market_id)
                        if acc is None:
                            acc = symbols[market_id] = _Symbol(market_id)
                        if exec_type is not None:
                            acc.futures = True
                        acc.trades.append((ts, recv, trade_id, price, qty, side, exec_type, number))
                        event_time = data.get("E")
                        if type(event_time) is int:
                            event_ms.append(event_time)
                            event_recv.append(recv)
                    elif event == "bookTicker" or (event is None and "B" in data and "A" in data):
                        update_id, bid, bid_qty, ask, ask_qty, market_id = data["u"], data["b"], data["B"], data["a"], data["A"], data["s"]
                        ts = data.get("T")
                        if ts is None:
                            ts = data.get("E")  # None for spot: filled from the clock offset below
                        acc = symbols.get(market_id)
                        if acc is None:
                            acc = symbols[market_id] = _Symbol(market_id)
                        if event is not None:
                            acc.futures = True
                        acc.quotes.append((ts, recv, update_id, bid, bid_qty, ask, ask_qty, number))
                    elif event == "depthUpdate":
                        market_id = data["s"]
                        ts = data.get("T")
                        if ts is None:
                            ts = data["E"]
                        acc = symbols.get(market_id)
                        if acc is None:
                            acc = symbols[market_id] = _Symbol(market_id)
                        prev = data.get("pu")
                        if prev is not None:
                            acc.futures = True
                        acc.add_depth(number, recv, ts, data["u"], data["U"], prev, False, data["b"], data["a"])
                        event_time = data.get("E")
                        if type(event_time) is int:
                            event_ms.append(event_time)
                            event_recv.append(recv)
                    elif "lastUpdateId" in data:
                        data["lastUpdateId"], data["bids"], data["asks"]  # noqa: B018 - KeyError = bad line
                        self.snapshots.append((number, recv, data))
                    elif event == "markPriceUpdate":
                        row = (data["E"], data["p"], data.get("i"), data.get("r"), data.get("T"), number)
                        acc = symbols.get(data["s"])
                        if acc is None:
                            acc = symbols[data["s"]] = _Symbol(data["s"])
                        acc.futures = True
                        acc.funding.append(row)
                    elif event is None and "result" not in data:
                        raise ValueError("not a Binance market-data message")
                    # else: another stream, or a subscription acknowledgement: not ticks
                except Exception as exc:  # noqa: BLE001 - any failure on a line makes it unparseable
                    if not line.strip():
                        continue
                    self.bad.add(number, _why(line, exc), line, _hint(line))

    def _clock_offset_ns(self) -> int:
        """The collector's clock offset: median of (exchange event time E - local receive time)
        over the trade and depth messages of this file (the ones that carry E everywhere). Spot bookTicker messages (and the spot
        REST snapshot) have no exchange time, so their ts_ns is recv_ns + this offset, an
        estimate of the exchange time good to the offset's spread (a few ms in the real
        captures, where the collector ran ~1.27 s behind Binance). A file with no E at all
        gets offset 0 (ts_ns = recv_ns)."""
        pairs = [(ms, recv) for ms, recv in zip(self.event_ms, self.event_recv, strict=True) if 0 < ms < MAX_MS and 0 < recv < 2**63]
        if not pairs:
            return 0
        exchange_ms, recv_ns = (np.array(column, dtype=np.int64) for column in zip(*pairs, strict=True))
        return int(round(float(np.median(exchange_ms * NS_PER_MS - recv_ns))))  # exact: int64 differences

    def _place_snapshots(self) -> None:
        """A REST snapshot names no stream: it belongs to its ``symbol`` field (COIN-M), else the
        file's only symbol with depth, else the one whose diff update ids span lastUpdateId."""
        for number, recv, data in self.snapshots:
            try:
                acc = self._snapshot_owner(data)
                ts = data.get("T")
                if ts is None:
                    ts = data.get("E")  # None for spot: filled from the clock offset
                if ts is not None:
                    acc.futures = True
                acc.add_depth(number, recv, ts, data["lastUpdateId"], None, None, True, data["bids"], data["asks"])
            except Exception as exc:  # noqa: BLE001
                self.deferred.append((number, f"REST depth snapshot: {exc}", (None, Kind.DEPTH)))  # type: ignore[arg-type]

    def _snapshot_owner(self, data: dict[str, Any]) -> _Symbol:
        named = data.get("symbol")
        if isinstance(named, str):
            acc = self.symbols.get(named)
            if acc is None:
                acc = self.symbols[named] = _Symbol(named)
            return acc
        with_depth = [acc for acc in self.symbols.values() if acc.d_u]
        candidates = with_depth or list(self.symbols.values())
        if len(candidates) == 1:
            return candidates[0]
        last = data["lastUpdateId"]
        spanning = [
            acc
            for acc in with_depth
            if _min_int(acc.d_first) is not None and _min_int(acc.d_first) <= last <= (_max_int(acc.d_u) or -1)
        ]
        if len(spanning) == 1:
            return spanning[0]
        raise ValueError(f"names no symbol and the file holds several ({', '.join(sorted(self.symbols))})")

    # --- pass 2: column lists to tables ---

    def _batches(self, acc: _Symbol, offset_ns: int) -> list[TickBatch]:
        exchange, symbol = EXCHANGES[acc.market], _unified(self.ctx, acc)
        check_override(self.ctx, "exchange", exchange, self.ctx.exchange)
        override = self.ctx.symbol
        if override is not None and "/" not in override:  # a market id (BTCUSDT) may name it too
            override = symbol if override.upper() == acc.market_id else override
        check_override(self.ctx, "symbol", symbol, override)
        contract_usd = coin_m_contract_usd(symbol) if acc.market == "coinm" else None
        out = []
        builders = (
            (Kind.TRADES, acc.trades, self._trades),
            (Kind.QUOTES, acc.quotes, self._quotes),
            (Kind.DEPTH, acc.d_line, self._depth),
            (Kind.FUNDING, acc.funding, self._funding),
        )
        for kind, present, build in builders:
            if present:
                rows = build(acc, contract_usd, offset_ns, symbol)
                out.append(TickBatch(exchange, symbol, kind, rows))
        return out

    def _defer(self, cols: Columns, lines: Sequence[int], hint: tuple[str, Kind]) -> np.ndarray | None:
        for index, reason in sorted(cols.bad.items()):
            self.deferred.append((lines[index], reason, hint))
        return cols.keep_mask(len(lines))

    def _trades(self, acc: _Symbol, contract_usd: float | None, _offset: int, symbol: str) -> pa.Table:
        cols = Columns()
        ts, recv, trade_id, price_text, qty, side, exec_type, line = zip(*acc.trades, strict=True)
        price = cols.floats(price_text, "p")
        columns = {
            "ts_ns": cols.ms_to_ns(ts, "T"),
            "recv_ns": cols.ints(recv, "local timestamp"),
            "trade_id": cols.ints(trade_id, "t"),
            "price": price,
            "qty": to_base(cols.floats(qty, "q"), price, contract_usd),
            "side": np.array(side, dtype=np.int8),
            EXEC_TYPE: pa.array(exec_type, pa.string()) if acc.futures else pa.nulls(len(line), pa.string()),
        }
        return table(Kind.TRADES, columns, self._defer(cols, line, (acc.market_id, Kind.TRADES)))

    def _quotes(self, acc: _Symbol, contract_usd: float | None, offset_ns: int, symbol: str) -> pa.Table:
        cols = Columns()
        ts, recv_raw, update_id, bid_text, bid_qty, ask_text, ask_qty, line = zip(*acc.quotes, strict=True)
        recv = cols.ints(recv_raw, "local timestamp")
        bid, ask = cols.floats(bid_text, "b"), cols.floats(ask_text, "a")
        columns = {
            "ts_ns": _fill_ts(cols.ms_to_ns(ts, "T", nullable=True), recv, offset_ns),
            "recv_ns": recv,
            "update_id": cols.ints(update_id, "u"),
            "bid_px": bid,
            "bid_qty": to_base(cols.floats(bid_qty, "B"), bid, contract_usd),
            "ask_px": ask,
            "ask_qty": to_base(cols.floats(ask_qty, "A"), ask, contract_usd),
        }
        return table(Kind.QUOTES, columns, self._defer(cols, line, (acc.market_id, Kind.QUOTES)))

    def _depth(self, acc: _Symbol, contract_usd: float | None, offset_ns: int, symbol: str) -> pa.Table:
        messages = Columns()
        recv = messages.ints(acc.d_recv, "local timestamp")
        ts = _fill_ts(messages.ms_to_ns(acc.d_ts, "T", nullable=True), recv, offset_ns)
        update_id = messages.ints(acc.d_u, "u")
        first = messages.ints(acc.d_first, "U", nullable=True)
        prev = messages.ints(acc.d_prev, "pu", nullable=True)
        nbid = np.array(acc.d_nbid, dtype=np.int64)
        nask = np.array(acc.d_nask, dtype=np.int64)
        count = nbid + nask
        owner = np.repeat(np.arange(len(count)), count)  # the message of each level row
        levels = Columns()
        price = levels.floats(acc.d_px, "price")
        qty = to_base(levels.floats(acc.d_qty, "quantity"), price, contract_usd)
        for row, reason in levels.bad.items():
            messages.bad.setdefault(int(owner[row]), reason)
        keep = self._defer(messages, acc.d_line, (acc.market_id, Kind.DEPTH))
        take = pa.array(owner)
        columns = {
            "ts_ns": ts.take(take),
            "recv_ns": recv.take(take),
            "update_id": update_id.take(take),
            "first_update_id": first.take(take),
            "prev_update_id": prev.take(take),
            "is_snapshot": np.array(acc.d_snap, dtype=bool)[owner],
            "side": np.repeat(np.tile(np.array([1, -1], dtype=np.int8), len(count)), np.column_stack([nbid, nask]).ravel()),
            "price": price,
            "qty": qty,
        }
        line = np.array(acc.d_line, dtype=np.int64)
        order = None
        if len(line) > 1 and (np.diff(line) < 0).any():  # snapshots were placed after the loop
            order = np.argsort(line[owner], kind="stable")
        rows = table(Kind.DEPTH, columns, None if keep is None else keep[owner])
        if order is not None:
            kept_order = order if keep is None else np.argsort(line[owner][keep[owner]], kind="stable")
            rows = rows.take(pa.array(kept_order))
        return rows

    def _funding(self, acc: _Symbol, _contract: float | None, _offset: int, symbol: str) -> pa.Table:
        cols = Columns()
        event, mark, index, rate, next_funding, line = zip(*acc.funding, strict=True)
        columns = {
            "ts_ns": cols.ms_to_ns(event, "E"),
            "recv_ns": pa.nulls(len(event), pa.int64()),
            "mark_px": cols.floats(mark, "p"),
            "index_px": cols.floats(index, "i", empty_nan=True),
            "funding_rate": cols.floats(rate, "r", empty_nan=True),
            "next_funding_ns": cols.ms_to_ns(next_funding, "T", nullable=True),
        }
        return table(Kind.FUNDING, columns, self._defer(cols, line, (acc.market_id, Kind.FUNDING)))

    def _report_deferred(self) -> None:
        if not self.deferred:
            return
        raws = raw_lines(self.ctx.path, {number for number, _, _ in self.deferred})
        seen: set[int] = set()
        for number, reason, hint in sorted(self.deferred, key=lambda item: item[0]):
            if number not in seen:
                seen.add(number)
                self.bad.add(number, reason, raws.get(number, ""), hint)


def _fill_ts(ts: pa.Array, recv: pa.Array, offset_ns: int) -> pa.Array:
    """Messages without exchange time get recv_ns + the file's clock offset (see _clock_offset_ns)."""
    if not ts.null_count:
        return ts
    estimate = recv.fill_null(0).to_numpy() + offset_ns
    return pa.array(np.where(ts.is_null().to_numpy(zero_copy_only=False), estimate, ts.fill_null(0).to_numpy()), pa.int64())


def _unified(ctx: Context, acc: _Symbol) -> str:
    try:
        return binance_unified(acc.market_id, acc.market)
    except SourceError as exc:
        raise ctx.error(str(exc)) from None


def _home(hint: Any, batches: list[TickBatch], unified: dict[str, str]) -> int | None:
    if not isinstance(hint, tuple):
        return None
    market_id, kind = hint
    symbol = unified.get(market_id.upper()) if isinstance(market_id, str) else None
    for index, batch in enumerate(batches):
        if batch.symbol == symbol and batch.kind == kind:
            return index
    for index, batch in enumerate(batches):
        if batch.symbol == symbol or (symbol is None and batch.kind == kind):
            return index
    return None


def _hint(line: bytes) -> tuple[str | None, Kind | None]:
    """The symbol and kind an unparseable line most likely belongs to, sniffed from its text."""
    match = _SYMBOL_IN_LINE.search(line)
    market_id = None
    if match:
        market_id = (match.group(1) or match.group(2) or b"").decode("ascii").upper()
    kind = next((kind for pattern, kind in _KIND_IN_LINE if pattern.search(line)), None)
    return market_id, kind


def _why(line: bytes, exc: Exception) -> str:
    if b" " not in line or not line.split(b" ", 1)[0].strip().isdigit():
        return "not '<local_ns> <json>'"
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    text = " ".join(str(exc).split())[:200]
    if type(exc).__name__ == "JSONDecodeError":
        return f"invalid JSON ({text})"
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, ValueError) else text


def _min_int(values: list[Any]) -> int | None:
    ints = [value for value in values if type(value) is int]
    return min(ints) if ints else None


def _max_int(values: list[Any]) -> int | None:
    ints = [value for value in values if type(value) is int]
    return max(ints) if ints else None
