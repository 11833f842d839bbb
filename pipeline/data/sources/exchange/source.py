"""``ExchangeSource``: live ticks from an exchange through ccxt (REST polling or websockets)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import ccxt
import ccxt.pro

from pipeline.config import Credentials, ExchangeConfig, ExchangeSourceConfig
from pipeline.data.sources.base import TickBatch
from pipeline.data.sources.exchange.convert import RowBuffer
from pipeline.data.sources.exchange.rest import RestPoller
from pipeline.data.sources.exchange.retry import Redactor, Retrier
from pipeline.data.sources.exchange.stream import StreamRunner
from pipeline.errors import SourceError

log = logging.getLogger(__name__)


class ExchangeSource:
    """Polls (``mode: rest``) or streams (``mode: stream``) for ``duration_s``, then yields batches.

    ``client`` injects a ready ccxt exchange (sync for rest, ccxt.pro for stream); by default one
    is built from the config with ccxt's rate limiter on. Rows are gathered over the whole run and
    yielded as one ``TickBatch`` per (symbol, kind) that has any. Data from a testnet is labelled
    ``<id>-testnet`` so it never mixes with real market data in the store.
    """

    def __init__(
        self,
        exchange: ExchangeConfig,
        options: ExchangeSourceConfig,
        symbols: tuple[str, ...],
        credentials: Credentials | None = None,
        client: Any = None,
        clock_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if not symbols:
            raise SourceError(f"exchange source {exchange.id}: no symbols to read")
        self.exchange = exchange
        self.options = options
        self.symbols = tuple(symbols)
        self._credentials = credentials
        self._client = client
        self._clock_ns = clock_ns
        self._sleep = sleep
        secrets: list[str | None] = []
        if credentials is not None:
            for secret in (credentials.api_key, credentials.api_secret):
                if secret is not None:
                    secrets.append(secret.get_secret_value())
        self._retrier = Retrier(exchange, Redactor(secrets), sleep)

    @property
    def exchange_name(self) -> str:
        return f"{self.exchange.id}-testnet" if self.exchange.testnet else self.exchange.id

    @property
    def description(self) -> str:
        return f"exchange:{self.exchange_name}:{self.options.mode}:{','.join(self.symbols)}"

    def __repr__(self) -> str:
        return f"ExchangeSource({self.description!r})"

    def batches(self) -> Iterator[TickBatch]:
        buffer = RowBuffer(self.exchange_name, self.description)
        client = self._client if self._client is not None else self.build_client()
        if self.options.mode == "stream":
            runner = StreamRunner(client, self.options, self.symbols, self._retrier, buffer, self._clock_ns)
            asyncio.run(runner.run())
        else:
            RestPoller(
                client, self.options, self.symbols, self._retrier, buffer, self._clock_ns, self._sleep
            ).run()
        yield from buffer.batches(self.symbols)

    def build_client(self) -> Any:
        """A ccxt (rest) or ccxt.pro (stream) exchange configured from the settings."""
        module: Any = ccxt.pro if self.options.mode == "stream" else ccxt
        cls = getattr(module, self.exchange.id, None)
        if cls is None:
            kind = "ccxt.pro (websocket)" if self.options.mode == "stream" else "ccxt"
            raise SourceError(f"exchange {self.exchange.id!r} is not supported by {kind}")
        settings: dict[str, Any] = {"enableRateLimit": True, "timeout": self.exchange.timeout_ms}
        if self.exchange.id.startswith("binance"):
            # with keys set, ccxt's Binance load_markets also fetches currencies from a signed
            # wallet endpoint: market data needs none of it
            settings["options"] = {"fetchCurrencies": False}
        credentials = self._credentials
        if credentials is not None and credentials.api_key is not None:
            settings["apiKey"] = credentials.api_key.get_secret_value()
        if credentials is not None and credentials.api_secret is not None:
            settings["secret"] = credentials.api_secret.get_secret_value()
        client = cls(settings)
        if self.exchange.testnet:
            try:
                client.set_sandbox_mode(True)
            except ccxt.BaseError as exc:
                raise self._retrier.fatal("set_sandbox_mode", exc) from None
        return client
