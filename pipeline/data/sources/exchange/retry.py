"""Retries with exponential backoff, and error text that is safe to show.

Transient failures (``ccxt.NetworkError`` and its subclasses: RequestTimeout,
ExchangeNotAvailable, RateLimitExceeded, DDoSProtection, InvalidNonce) are retried after
``backoff_s``, doubling up to ``backoff_max_s``, at most ``max_retries`` times in a row. Anything
else ccxt raises (AuthenticationError, BadSymbol, BadRequest, NotSupported...) fails at once.

ccxt error text can echo request URLs (with signatures) and response bodies, so every message is
redacted: credential values, query strings and key/signature-like fields are removed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import ccxt

from pipeline.config import ExchangeConfig
from pipeline.errors import SourceError, TransientSourceError

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE: tuple[type[BaseException], ...] = (ccxt.NetworkError,)
MAX_REASON = 200

_URL = re.compile(r"(?i)\b((?:https?|wss?)://[^\s?#\"'<>]+)(?:[?#][^\s\"'<>]*)?")
_FIELD = re.compile(
    r"(?i)\b(signature|api[_-]?key|apikey|secret|x-mbx-apikey|passphrase|password|token|listenkey)"
    r"([\"']?\s*[:=]\s*[\"']?)[^\s&\"',;}]+"
)
_BINANCE_ERROR = re.compile(r'"code"\s*:\s*(-?\d+)\s*,\s*"msg"\s*:\s*"([^"]*)"')


class Redactor:
    """Removes secrets from text: the given values, URL query strings and key-like fields."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _URL.sub(r"\1", text)
        text = _FIELD.sub(r"\1\2***", text)
        return " ".join(text.split())


class Retrier:
    """Runs exchange calls with the retry policy of an ``ExchangeConfig``."""

    def __init__(
        self,
        config: ExchangeConfig,
        redact: Redactor,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.config = config
        self.redact = redact
        self._sleep = sleep

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 = the first retry)."""
        return min(self.config.backoff_s * 2**attempt, self.config.backoff_max_s)

    def reason(self, exc: BaseException) -> str:
        """``ErrorClass: short reason``, without the exchange id prefix ccxt adds, redacted."""
        text = str(exc)
        match = _BINANCE_ERROR.search(text)
        if match:
            text = f"code {match.group(1)}: {match.group(2)}"
        text = self.redact(text)
        prefix = self.config.id + " "
        if text.startswith(prefix):
            text = text[len(prefix) :]
        if len(text) > MAX_REASON:
            text = text[: MAX_REASON - 3] + "..."
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    def fatal(self, what: str, exc: BaseException) -> SourceError:
        return SourceError(f"{self.config.id} {what} failed: {self.reason(exc)}")

    def exhausted(self, what: str, exc: BaseException) -> SourceError:
        return TransientSourceError(
            f"{self.config.id} {what} failed after {self.config.max_retries} retries: {self.reason(exc)}"
        )

    def failed(self, what: str, exc: BaseException, attempt: int) -> float:
        """The delay before retrying after a transient failure; raises when none is left."""
        if attempt >= self.config.max_retries:
            raise self.exhausted(what, exc) from None
        delay = self.delay(attempt)
        log.warning(
            "%s %s: %s; retry %d/%d in %.3g s",
            self.config.id, what, self.reason(exc), attempt + 1, self.config.max_retries, delay,
        )
        return delay

    def call(self, what: str, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except RETRYABLE as exc:
                delay = self.failed(what, exc, attempt)
            except ccxt.BaseError as exc:
                raise self.fatal(what, exc) from None
            self._sleep(delay)
            attempt += 1

    async def acall(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await fn()
            except RETRYABLE as exc:
                delay = self.failed(what, exc, attempt)
            except ccxt.BaseError as exc:
                raise self.fatal(what, exc) from None
            await self.asleep(delay)
            attempt += 1

    async def asleep(self, seconds: float) -> None:
        """Wait without blocking the event loop. An injected (test) sleep is called instead."""
        if self._sleep is time.sleep:
            await asyncio.sleep(seconds)
            return
        result = self._sleep(seconds)
        if inspect.isawaitable(result):
            await result
        await asyncio.sleep(0)
