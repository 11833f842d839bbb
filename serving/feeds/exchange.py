"""``ExchangeFeed``: live market data through ccxt.pro websockets (Binance USD-M by default).

One asyncio loop in the feed's thread runs a task per (symbol, channel) and a monitor:

- trades: ``watch_trades`` (Binance ``@trade``: exchange trade ids, as the stored files have);
  a trade that is not an ordinary market execution (Binance ``X`` INSURANCE_FUND, ADL: the quality
  step quarantines them from training data) is not emitted (``filtered``), nor one seen before
  (``duplicates``: ccxt's cache can hand a trade over again after a reconnect).
- quotes: ``watch_bids_asks`` (Binance ``@bookTicker``). ccxt keeps the latest per symbol, so an
  update that arrives while the previous one is handled is skipped (ccxt conflates before we do).
- mark price and funding: ``watch_mark_price`` (swaps).
- depth (Binance only): the raw ``depthUpdate`` diffs, kept in sequence by ``DepthSync``. ccxt's
  dispatch is kept but its ``handle_order_book`` is replaced on this client, so the feed sees every
  raw diff (ccxt's own book would hide them, and the feature engine needs them raw).
  ``watch_order_book`` subscribes and, as ccxt does after every (re)subscription, hands over the
  REST snapshot; after a sequence gap on a live connection the feed fetches a new snapshot itself
  (``fetch_order_book``).

A ``NetworkError`` (a dropped connection, a timeout; ccxt drops the connection) is retried after an
exponential backoff with jitter, for ever: the next ``watch_*`` call reconnects and subscribes
again. Statuses per symbol say what happens: ``disconnected``, ``reconnecting``, ``connected``
(per channel), ``gap``/``resynced`` (depth), ``stale`` (no message from the symbol for
``stale_after_s``; the connections are then dropped and rebuilt, since a half-open TCP connection
can stay silent for minutes). Any other ccxt error (unknown symbol...) stops the feed with
``failed``. Market data needs no credentials.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import ccxt
import ccxt.pro

from pipeline.config import ExchangeConfig, ExchangeSourceConfig
from pipeline.data.quality import MARKET_EXEC_TYPE
from pipeline.data.schemas import EXEC_TYPE
from pipeline.data.sources.exchange import ExchangeSource
from pipeline.data.sources.exchange.convert import bidask_row, funding_row, trade_row
from pipeline.data.sources.exchange.rest import TradeCursor
from pipeline.errors import ConfigError, SourceError
from serving.events import Quote, Trade
from serving.feeds.base import CONNECTED, DISCONNECTED, RECONNECTING, STALE, Feed, MarkPrice
from serving.feeds.binance_depth import DepthSync, diff_event, snapshot_event
from serving.feeds.config import ExchangeFeedConfig

NS = 1_000_000_000
STOP_CHECK_S = 0.25  # how often the monitor looks at the stop flag
Sleep = Callable[[float], Awaitable[Any]]


class Backoff:
    """Exponential backoff with jitter: ``min(base * 2**attempt, max) * (1 +/- jitter)``."""

    def __init__(self, base_s: float, max_s: float, jitter: float, rng: random.Random | None = None) -> None:
        self.base_s, self.max_s, self.jitter = base_s, max_s, jitter
        self.rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        delay = min(self.base_s * 2.0 ** min(attempt, 60), self.max_s)
        if self.jitter:
            delay *= 1.0 + self.jitter * (2.0 * self.rng.random() - 1.0)
        return delay


def is_binance(client: Any) -> bool:
    return isinstance(client, ccxt.pro.binance)


class ExchangeFeed(Feed):
    """Live trades, quotes, mark prices and depth of ``symbols`` (see module doc).

    ``client`` injects a ready ccxt.pro exchange (tests; markets may be preloaded); by default one
    is built from ``exchange`` (id, testnet, timeout). ``clock_ns`` stamps receive times, statuses
    and stale checks; ``sleep`` is the backoff's wait (both injectable for tests); ``rng`` the jitter's.
    """

    name = "exchange"

    def __init__(
        self,
        exchange: ExchangeConfig,
        symbols: str | Sequence[str],
        config: ExchangeFeedConfig | None = None,
        client: Any = None,
        clock_ns: Callable[[], int] = time.time_ns,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or ExchangeFeedConfig()
        super().__init__(self.config.max_events, clock_ns)
        self.exchange = exchange
        self.symbols = (symbols,) if isinstance(symbols, str) else tuple(symbols)
        if not self.symbols:
            raise ConfigError("exchange feed: no symbols")
        self.client = client
        self.backoff = Backoff(self.config.backoff_base_s, self.config.backoff_max_s, self.config.backoff_jitter, rng)
        self._sleep = sleep
        self.markets: dict[str, Mapping[str, Any]] = {}
        self.depth: dict[str, DepthSync] = {}
        self._depth_ids: dict[str, str] = {}  # exchange market id -> symbol, for raw depth messages
        self._wanted: dict[str, asyncio.Event] = {}  # set: a REST snapshot is needed
        self._subscribing: set[str] = set()  # depth (re)subscribed, ccxt's snapshot not yet in
        self._last_message_ns: dict[str, int] = {}
        self._stale: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    # ---- thread and loop ----

    def _prepare(self) -> None:
        if self.client is None:
            source = ExchangeSource(self.exchange, ExchangeSourceConfig(mode="stream"), self.symbols)
            self.client = source.build_client()  # the one place ccxt clients are configured
        if self.config.depth and not is_binance(self.client):
            raise ConfigError(f"exchange feed: raw depth needs a Binance exchange, not {self.exchange.id!r}")
        if self.client.markets:
            self._resolve_markets()  # preloaded: an unknown symbol fails here, in start()

    def _produce(self) -> None:
        asyncio.run(self._run())

    def _interrupt(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop closed in the meantime
                pass

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if self._stopping.is_set():
            return
        try:
            await self._load_markets()
            now = self.clock_ns()
            jobs = [self._monitor()]
            for symbol in self.symbols:
                self._last_message_ns[symbol] = now
                jobs += self._jobs(symbol)
            await asyncio.gather(*jobs)
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise
        finally:
            await self.client.close()

    async def _load_markets(self) -> None:
        attempt = 0
        while not self.client.markets:
            try:
                await self.client.load_markets()
            except ccxt.NetworkError as exc:
                delay = self.backoff.delay(attempt)
                attempt += 1
                self.status(None, RECONNECTING, f"load_markets: {_reason(exc)}; retry {attempt} in {delay:.3g} s")
                await self._sleep(delay)
        self._resolve_markets()

    def _resolve_markets(self) -> None:
        for symbol in self.symbols:
            try:
                self.markets[symbol] = self.client.market(symbol)
            except ccxt.BaseError as exc:
                raise ConfigError(f"exchange feed {self.exchange.id}: {symbol}: {_reason(exc)}") from None

    def _jobs(self, symbol: str) -> list[Awaitable[None]]:
        has, market, config = self.client.has, self.markets[symbol], self.config
        wanted = {
            "watchTrades": config.trades,
            "watchBidsAsks": config.quotes,
            "watchMarkPrice": config.mark_price and bool(market.get("swap")),
            "watchOrderBook": config.depth,
        }
        missing = [name for name, on in wanted.items() if on and not has.get(name)]
        if missing:
            raise ConfigError(f"exchange feed {self.exchange.id}: no {', '.join(missing)} for {symbol}")
        jobs: list[Awaitable[None]] = []
        client = self.client
        if config.trades:
            cursor = TradeCursor()
            jobs.append(self._watch(symbol, "trades", lambda: client.watch_trades(symbol),
                                    lambda trades: self._on_trades(symbol, cursor, trades)))  # fmt: skip
        if config.quotes:
            last: list[Any] = [None]
            jobs.append(self._watch(symbol, "quotes", lambda: client.watch_bids_asks([symbol]),
                                    lambda tickers: self._on_bidask(symbol, last, tickers)))  # fmt: skip
        if wanted["watchMarkPrice"]:
            jobs.append(self._watch(symbol, "mark_price", lambda: client.watch_mark_price(symbol),
                                    lambda ticker: self._on_mark(symbol, ticker)))  # fmt: skip
        if config.depth:
            jobs += self._depth_jobs(symbol)
        return jobs

    async def _watch(
        self, symbol: str, channel: str, call: Callable[[], Awaitable[Any]], handle: Callable[[Any], None],
        on_lost: Callable[[str], None] | None = None,
    ) -> None:  # fmt: skip
        """Await ``call`` and hand its results to ``handle`` until stopped; reconnect on NetworkError."""
        attempt, up = 0, False
        while not self._stopping.is_set():
            try:
                result = await call()
            except ccxt.NetworkError as exc:
                self.counters["disconnects"] += 1
                reason = _reason(exc)
                if up:
                    self.status(symbol, DISCONNECTED, f"{channel}: {reason}")
                up = False
                if on_lost is not None:
                    on_lost(reason)
                delay = self.backoff.delay(attempt)
                attempt += 1
                self.status(symbol, RECONNECTING, f"{channel}: retry {attempt} in {delay:.3g} s ({reason})")
                await self._sleep(delay)
                self.counters["reconnects"] += 1
                continue
            except ccxt.BaseError as exc:  # not transient: the feed fails (FeedStatus failed)
                raise SourceError(f"{self.exchange.id} {channel}({symbol}): {_reason(exc)}") from None
            if not up:
                up, attempt = True, 0
                self.status(symbol, CONNECTED, channel)
            self._heard(symbol)
            handle(result)

    def _heard(self, symbol: str) -> None:
        self._last_message_ns[symbol] = self.clock_ns()
        if symbol in self._stale:
            self._stale.discard(symbol)
            self.status(symbol, CONNECTED, "data again")

    async def _monitor(self) -> None:
        """Stale detection (a symbol with no message for ``stale_after_s``), and the stop flag."""
        limit_ns = int(self.config.stale_after_s * NS)
        next_check = time.monotonic()
        while True:
            await asyncio.sleep(min(STOP_CHECK_S, self.config.stale_check_s))
            if self._stopping.is_set():
                if self._task is not None:
                    self._task.cancel()  # in case stop() came before the loop could be reached
                return
            if time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + self.config.stale_check_s
            now = self.clock_ns()
            for symbol, heard in self._last_message_ns.items():
                silent_ns = now - heard
                if silent_ns > limit_ns and symbol not in self._stale:
                    self._stale.add(symbol)
                    self.counters["stale"] += 1
                    self.status(symbol, STALE, f"no message for {silent_ns / NS:.1f} s")
                    if self.config.reconnect_when_stale:
                        self._drop_connections(f"no message from {symbol} for {silent_ns / NS:.1f} s")

    def _drop_connections(self, reason: str) -> None:
        """Fail every websocket as a dropped connection would: the watchers reconnect."""
        for ws in list((self.client.clients or {}).values()):
            ws.on_error(ccxt.NetworkError(reason))

    # ---- normalisation: ccxt's unified structures to events ----

    def _on_trades(self, symbol: str, cursor: TradeCursor, trades: list[Mapping[str, Any]]) -> None:
        market, recv_ns = self.markets[symbol], self.clock_ns()
        fresh = cursor.fresh(trades)
        self.counters["duplicates"] += len(trades) - len(fresh)
        for trade in fresh:
            row = trade_row(trade, market, recv_ns)
            if isinstance(row, str) or row["ts_ns"] is None or row[EXEC_TYPE] not in (None, MARKET_EXEC_TYPE):
                self.counters["filtered"] += 1
                continue
            self.emit(Trade(symbol, row["ts_ns"], _nan(row["price"]), _nan(row["qty"]), row["side"]))

    def _on_bidask(self, symbol: str, last: list[Any], tickers: Mapping[str, Any]) -> None:
        ticker = tickers.get(symbol) if isinstance(tickers, Mapping) else None
        if ticker is None:
            return
        row = bidask_row(ticker, self.markets[symbol], self.clock_ns())
        key = (row["update_id"], row["ts_ns"], row["bid_px"], row["bid_qty"], row["ask_px"], row["ask_qty"])
        previous = last[0]
        if key == previous:
            self.counters["duplicates"] += 1  # ccxt handed the same update over again
            return
        if previous is not None and None not in (key[0], previous[0]) and key[0] < previous[0]:
            self.counters["out_of_order"] += 1
        last[0] = key
        self.emit(Quote(symbol, row["ts_ns"], *(_nan(row[k]) for k in ("bid_px", "bid_qty", "ask_px", "ask_qty"))))

    def _on_mark(self, symbol: str, ticker: Mapping[str, Any]) -> None:
        info = ticker.get("info") if isinstance(ticker.get("info"), Mapping) else {}
        rate = {**ticker, "fundingRate": info.get("r"), "fundingTimestamp": info.get("T")}  # Binance markPriceUpdate
        row = funding_row(rate, self.clock_ns())
        self.emit(MarkPrice(symbol, row["ts_ns"], _nan(row["mark_px"]), _nan(row["index_px"]),
                            _nan(row["funding_rate"]), row["next_funding_ns"]))  # fmt: skip

    # ---- depth (Binance) ----

    def _depth_jobs(self, symbol: str) -> list[Awaitable[None]]:
        market = self.markets[symbol]
        sync = DepthSync(symbol, self.emit, lambda state, detail: self.status(symbol, state, detail), self.counters,
                         self.config.depth_buffer)  # fmt: skip
        self.depth[symbol] = sync
        self._depth_ids[str(market["id"])] = symbol
        self._wanted[symbol] = asyncio.Event()
        self._subscribing.add(symbol)
        self.client.handle_order_book = self._on_depth_message  # every raw diff comes here, in order
        limit = self.config.depth_snapshot_limit
        params = {"watchOrderBookRate": str(self.config.depth_rate_ms)}

        def on_book(book: Mapping[str, Any]) -> None:  # ccxt's snapshot after a (re)subscription
            self._subscribing.discard(symbol)
            sync.on_snapshot(snapshot_event(symbol, book, market, self.clock_ns()))
            self._want_snapshot(symbol)

        def on_lost(reason: str) -> None:  # the next watch subscribes again: ccxt brings a snapshot
            self._subscribing.add(symbol)
            sync.lost(f"depth stream interrupted: {reason}")

        watch = self._watch(symbol, "depth", lambda: self.client.watch_order_book(symbol, limit, dict(params)),
                            on_book, on_lost)  # fmt: skip
        return [watch, self._resync(symbol, sync)]

    def _on_depth_message(self, ws_client: Any, message: Mapping[str, Any]) -> None:
        """Replaces ccxt's ``handle_order_book``: a raw ``depthUpdate`` of a subscribed symbol."""
        symbol = self._depth_ids.get(str(message.get("s")))
        if symbol is None:
            return
        self._heard(symbol)
        self.depth[symbol].on_diff(diff_event(symbol, message, self.markets[symbol], self.clock_ns()))
        self._want_snapshot(symbol)

    def _want_snapshot(self, symbol: str) -> None:
        """A gap on a live subscription: the resync task fetches a REST snapshot."""
        if self.depth[symbol].wants_snapshot and symbol not in self._subscribing:
            self._wanted[symbol].set()

    async def _resync(self, symbol: str, sync: DepthSync) -> None:
        wanted, market = self._wanted[symbol], self.markets[symbol]
        while not self._stopping.is_set():
            await wanted.wait()
            wanted.clear()
            attempt = 0
            while sync.wants_snapshot and symbol not in self._subscribing and not self._stopping.is_set():
                try:
                    book = await self.client.fetch_order_book(symbol, self.config.depth_snapshot_limit)
                except ccxt.NetworkError as exc:
                    delay = self.backoff.delay(attempt)
                    attempt += 1
                    self.status(symbol, RECONNECTING, f"depth snapshot: {_reason(exc)}; retry in {delay:.3g} s")
                    await self._sleep(delay)
                    continue
                sync.on_snapshot(snapshot_event(symbol, book, market, self.clock_ns()))
                if sync.wants_snapshot:  # older than the stream: give the REST side time to catch up
                    await self._sleep(self.backoff.delay(attempt))
                    attempt += 1


def _nan(value: float | None) -> float:
    """A missing value as NaN: the engine and the feature engine reject non-finite ticks."""
    return float("nan") if value is None else value


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
