"""REST polling: trades, order book (quotes + depth snapshot) and funding, every poll interval."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ccxt

from pipeline.config import ExchangeSourceConfig
from pipeline.data.schemas import Kind
from pipeline.data.sources.exchange.convert import RowBuffer, book_rows, funding_row, trade_row
from pipeline.data.sources.exchange.retry import Retrier

log = logging.getLogger(__name__)

NS = 1_000_000_000
BINANCE_TRADES_LIMIT = 1000
BINANCE_BOOK_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
SEEN_IDS_MAX = 50_000  # trade ids kept for de-duplication before old ones are pruned
SEEN_KEEP_NS = 10 * 60 * NS


def is_binance(client: Any) -> bool:
    return isinstance(client, ccxt.binance) or str(getattr(client, "id", "")).startswith("binance")


def binance_trades_method(market: Mapping[str, Any]) -> str | None:
    """The Binance endpoint with real (not aggregated) trade ids, as the websocket ``@trade`` has.

    ccxt's default for Binance is aggTrades, whose ids are aggregate ids: stored next to
    websocket or file trades they would collide in the trade_id key. The recent-trades endpoints
    return the newest trades (up to 1000) with exchange trade ids; gaps between polls are logged.
    """
    if market.get("option"):
        return None  # ccxt's default for options is already the plain trades endpoint
    if market.get("linear"):
        return "fapiPublicGetTrades"
    if market.get("inverse"):
        return "dapiPublicGetTrades"
    return "publicGetTrades"


def book_limit(client: Any, depth: int) -> int:
    """Binance accepts only some depth limits: the smallest valid one that covers ``depth``."""
    if not is_binance(client):
        return depth
    return next((limit for limit in BINANCE_BOOK_LIMITS if limit >= depth), BINANCE_BOOK_LIMITS[-1])


@dataclass
class TradeCursor:
    """What one symbol's trade polling has seen: ids (to de-duplicate) and the latest time."""

    last_ms: int | None = None
    max_int_id: int | None = None
    seen: dict[str, int] = field(default_factory=dict)  # id -> timestamp ms

    def fresh(self, trades: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        out = []
        for trade in trades:
            key = str(trade.get("id"))
            if key in self.seen:
                continue
            ts = trade.get("timestamp")
            self.seen[key] = int(ts) if isinstance(ts, (int, float)) else 0
            out.append(trade)
            if isinstance(ts, (int, float)) and (self.last_ms is None or ts > self.last_ms):
                self.last_ms = int(ts)
        if len(self.seen) > SEEN_IDS_MAX and self.last_ms is not None:
            floor = self.last_ms - SEEN_KEEP_NS // 1_000_000
            self.seen = {k: v for k, v in self.seen.items() if v >= floor}
        return out


class RestPoller:
    def __init__(
        self,
        client: Any,
        options: ExchangeSourceConfig,
        symbols: tuple[str, ...],
        retrier: Retrier,
        buffer: RowBuffer,
        clock_ns: Callable[[], int],
        sleep: Callable[[float], Any],
    ) -> None:
        self.client = client
        self.options = options
        self.symbols = symbols
        self.retry = retrier
        self.buffer = buffer
        self.clock_ns = clock_ns
        self.sleep = sleep
        self.cursors = {symbol: TradeCursor() for symbol in symbols}
        self.markets: dict[str, Mapping[str, Any]] = {}

    def run(self) -> None:
        if not self.client.markets:
            self.retry.call("load_markets", self.client.load_markets)
        for symbol in self.symbols:
            try:
                self.markets[symbol] = self.client.market(symbol)
            except ccxt.BaseError as exc:
                raise self.retry.fatal(f"market({symbol})", exc) from None
        interval_ns = int(self.options.poll_interval_s * NS)
        start = self.clock_ns()
        deadline = start + int(self.options.duration_s * NS)
        next_poll = start
        polls = 0
        while self.clock_ns() < deadline:
            for symbol in self.symbols:
                self.poll(symbol)
            polls += 1
            next_poll += interval_ns
            if next_poll >= deadline:
                break
            wait_ns = next_poll - self.clock_ns()
            if wait_ns > 0:
                self.sleep(wait_ns / NS)
            else:
                next_poll = self.clock_ns()  # fell behind: poll now, do not burst to catch up
        log.info("%s: %d REST polls of %s", self.client.id, polls, ", ".join(self.symbols))

    def poll(self, symbol: str) -> None:
        market = self.markets[symbol]
        self.poll_trades(symbol, market)
        self.poll_book(symbol, market)
        if market.get("swap") and self.client.has.get("fetchFundingRate"):
            self.poll_funding(symbol)

    def poll_trades(self, symbol: str, market: Mapping[str, Any]) -> None:
        cursor = self.cursors[symbol]
        method = binance_trades_method(market) if is_binance(self.client) else None
        if method is not None:
            params = {"fetchTradesMethod": method}
            trades = self.retry.call(
                f"fetch_trades({symbol})",
                lambda: self.client.fetch_trades(symbol, None, BINANCE_TRADES_LIMIT, params),
            )
        else:
            since = cursor.last_ms  # inclusive: same-millisecond trades of a later poll are kept
            trades = self.retry.call(f"fetch_trades({symbol})", lambda: self.client.fetch_trades(symbol, since))
        recv_ns = self.clock_ns()
        fresh = cursor.fresh(trades)
        if method is not None:
            self._check_gap(symbol, cursor, fresh)
        for trade in fresh:
            row = trade_row(trade, market, recv_ns)
            if isinstance(row, str):
                self.buffer.reject(symbol, Kind.TRADES, row, trade)
            else:
                self.buffer.add(symbol, Kind.TRADES, row)

    def _check_gap(self, symbol: str, cursor: TradeCursor, fresh: list[Mapping[str, Any]]) -> None:
        """Binance trade ids are consecutive: a jump means trades were missed between polls."""
        ids = sorted(int(t["id"]) for t in fresh if str(t.get("id", "")).isdigit())
        if not ids:
            return
        if cursor.max_int_id is not None and ids[0] > cursor.max_int_id + 1:
            log.warning(
                "%s %s: %d trades missed between polls (ids %d..%d); poll more often",
                self.client.id, symbol, ids[0] - cursor.max_int_id - 1, cursor.max_int_id + 1, ids[0] - 1,
            )
        cursor.max_int_id = max(ids[-1], cursor.max_int_id or ids[-1])

    def poll_book(self, symbol: str, market: Mapping[str, Any]) -> None:
        depth = self.options.order_book_depth
        limit = book_limit(self.client, depth)
        book = self.retry.call(
            f"fetch_order_book({symbol})", lambda: self.client.fetch_order_book(symbol, limit)
        )
        quote, levels = book_rows(book, market, depth, self.clock_ns())
        self.buffer.add(symbol, Kind.QUOTES, quote)
        self.buffer.extend(symbol, Kind.DEPTH, levels)

    def poll_funding(self, symbol: str) -> None:
        rate = self.retry.call(f"fetch_funding_rate({symbol})", lambda: self.client.fetch_funding_rate(symbol))
        self.buffer.add(symbol, Kind.FUNDING, funding_row(rate, self.clock_ns()))
