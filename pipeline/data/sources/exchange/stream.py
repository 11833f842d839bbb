"""Websocket streaming with ccxt.pro for a bounded time: trades, best bid/ask, order book, funding.

One asyncio task per (symbol, channel). Each keeps one ``watch_*`` call pending and checks the
deadline while it waits. A ``NetworkError`` (a dropped connection, a book out of sequence) is
retried with backoff: ccxt drops the failed connection, so the next ``watch_*`` call reconnects and
subscribes again. Anything else ccxt raises stops the run with a ``SourceError``.

- trades: ``watch_trades`` (Binance ``@trade``: exchange trade ids, like the recorded files).
- quotes: ``watch_bids_asks`` (Binance ``@bookTicker``) where the exchange has it, else the top
  of the watched order book. ccxt keeps only the latest best bid/ask, so updates that arrive
  while a previous one is being handled are skipped (a sample, not every update).
- depth: ``watch_order_book`` (ccxt keeps the book in sync from the diff stream and a REST
  snapshot); a snapshot of its top ``order_book_depth`` levels is stored at most once per poll
  interval.
- funding (swaps): ``fetch_funding_rate`` polled every poll interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import ccxt

from pipeline.config import ExchangeSourceConfig
from pipeline.data.schemas import Kind
from pipeline.data.sources.exchange.convert import RowBuffer, bidask_row, book_rows, funding_row, trade_row
from pipeline.data.sources.exchange.rest import NS, TradeCursor
from pipeline.data.sources.exchange.retry import RETRYABLE, Retrier

log = logging.getLogger(__name__)

CHECK_S = 0.25  # how often a waiting task looks at the deadline


class StreamRunner:
    def __init__(
        self,
        client: Any,
        options: ExchangeSourceConfig,
        symbols: tuple[str, ...],
        retrier: Retrier,
        buffer: RowBuffer,
        clock_ns: Callable[[], int],
    ) -> None:
        self.client = client
        self.options = options
        self.symbols = symbols
        self.retry = retrier
        self.buffer = buffer
        self.clock_ns = clock_ns
        self.markets: dict[str, Mapping[str, Any]] = {}
        self.deadline = 0

    async def run(self) -> None:
        try:
            if not self.client.markets:
                await self.retry.acall("load_markets", self.client.load_markets)
            for symbol in self.symbols:
                try:
                    self.markets[symbol] = self.client.market(symbol)
                except ccxt.BaseError as exc:
                    raise self.retry.fatal(f"market({symbol})", exc) from None
            self.deadline = self.clock_ns() + int(self.options.duration_s * NS)
            jobs = [job for symbol in self.symbols for job in self.jobs(symbol)]
            tasks = [asyncio.ensure_future(job) for job in jobs]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await self.client.close()

    def jobs(self, symbol: str) -> list[Awaitable[None]]:
        has = self.client.has
        market = self.markets[symbol]
        jobs: list[Awaitable[None]] = []
        if has.get("watchTrades"):
            jobs.append(self.watch_trades(symbol, market))
        bidasks = bool(has.get("watchBidsAsks"))
        if bidasks:
            jobs.append(self.watch_bidasks(symbol, market))
        if has.get("watchOrderBook"):
            jobs.append(self.watch_book(symbol, market, quotes=not bidasks))
        if market.get("swap") and has.get("fetchFundingRate"):
            jobs.append(self.poll_funding(symbol))
        if not jobs:
            raise self.retry.fatal(f"stream({symbol})", ccxt.NotSupported("no websocket market data"))
        return jobs

    async def loop(
        self,
        what: str,
        call: Callable[[], Awaitable[Any]],
        handle: Callable[[Any], None],
        pause_s: float = 0.0,
    ) -> None:
        """Until the deadline: await ``call``, hand its result to ``handle``, retry on NetworkError."""
        failures = 0
        pending: asyncio.Future | None = None
        try:
            while (remaining := (self.deadline - self.clock_ns()) / NS) > 0:
                if pending is None:
                    pending = asyncio.ensure_future(call())
                done, _ = await asyncio.wait({pending}, timeout=min(remaining, CHECK_S))
                if not done:
                    continue
                task, pending = pending, None
                try:
                    result = task.result()
                except RETRYABLE as exc:
                    delay = self.retry.failed(what, exc, failures)
                    failures += 1
                    await self.retry.asleep(delay)
                    continue
                except ccxt.BaseError as exc:
                    raise self.retry.fatal(what, exc) from None
                failures = 0  # a working connection again: the next outage gets all its retries
                handle(result)
                if pause_s > 0:
                    await asyncio.sleep(max(0.0, min(pause_s, (self.deadline - self.clock_ns()) / NS)))
        finally:
            if pending is not None:
                pending.cancel()

    async def watch_trades(self, symbol: str, market: Mapping[str, Any]) -> None:
        cursor = TradeCursor()

        def handle(trades: list[Mapping[str, Any]]) -> None:
            recv_ns = self.clock_ns()
            for trade in cursor.fresh(trades):
                row = trade_row(trade, market, recv_ns)
                if isinstance(row, str):
                    self.buffer.reject(symbol, Kind.TRADES, row, trade)
                else:
                    self.buffer.add(symbol, Kind.TRADES, row)

        await self.loop(f"watch_trades({symbol})", lambda: self.client.watch_trades(symbol), handle)

    async def watch_bidasks(self, symbol: str, market: Mapping[str, Any]) -> None:
        last: list[Any] = [None]

        def handle(tickers: Mapping[str, Any]) -> None:
            recv_ns = self.clock_ns()
            ticker = tickers.get(symbol) if isinstance(tickers, Mapping) else None
            if ticker is None and isinstance(tickers, Mapping) and tickers.get("symbol") == symbol:
                ticker = tickers
            if ticker is None:
                return
            row = bidask_row(ticker, market, recv_ns)
            key = (row["update_id"], row["ts_ns"], row["bid_px"], row["bid_qty"], row["ask_px"], row["ask_qty"])
            if key != last[0]:  # ccxt hands back the last ticker again when nothing newer came
                last[0] = key
                self.buffer.add(symbol, Kind.QUOTES, row)

        await self.loop(f"watch_bids_asks({symbol})", lambda: self.client.watch_bids_asks([symbol]), handle)

    async def watch_book(self, symbol: str, market: Mapping[str, Any], quotes: bool) -> None:
        depth = self.options.order_book_depth
        interval_ns = int(self.options.poll_interval_s * NS)
        state: dict[str, Any] = {"at": None, "nonce": None}

        def handle(book: Mapping[str, Any]) -> None:
            now = self.clock_ns()
            if state["at"] is not None and now - state["at"] < interval_ns:
                return
            nonce = (book.get("nonce"), book.get("timestamp"))
            if nonce == state["nonce"]:
                return
            state["at"], state["nonce"] = now, nonce
            quote, levels = book_rows(book, market, depth, now)
            self.buffer.extend(symbol, Kind.DEPTH, levels)
            if quotes:
                self.buffer.add(symbol, Kind.QUOTES, quote)

        # no limit: ccxt syncs from the full REST snapshot (a short one loses levels as the top
        # moves); the stored snapshot is cut to ``depth`` levels
        await self.loop(f"watch_order_book({symbol})", lambda: self.client.watch_order_book(symbol), handle)

    async def poll_funding(self, symbol: str) -> None:
        def handle(rate: Mapping[str, Any]) -> None:
            self.buffer.add(symbol, Kind.FUNDING, funding_row(rate, self.clock_ns()))

        await self.loop(
            f"fetch_funding_rate({symbol})",
            lambda: self.client.fetch_funding_rate(symbol),
            handle,
            pause_s=self.options.poll_interval_s,
        )
