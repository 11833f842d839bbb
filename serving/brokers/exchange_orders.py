"""The ccxt side of the live broker (serving/brokers/live.py): the trading client, our orders as
ccxt ``create_order`` arguments, ccxt's orders as ours, and a logger for ccxt that cannot leak keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import ccxt

from pipeline.config import Credentials, ExchangeConfig
from pipeline.data.sources.exchange.retry import Redactor
from serving.brokers.base import CANCELLED, EXPIRED, FILLED, REJECTED, WORKING, BrokerError
from serving.events import LIMIT, MARKET, STOP, Order

QTY_EPS = 1e-12


class LiveBrokerError(BrokerError):
    """An exchange call that failed for good (bad keys, a refused setting, an unknown symbol)."""


class ExchangeUnreachableError(LiveBrokerError):
    """Network failures outlasted the retries. ``poll`` and cancels ride it out (they are tried
    again); anything else stops."""


def trading_client(exchange: ExchangeConfig, credentials: Credentials) -> Any:
    """A ccxt exchange that can trade: keys set, rate limiter on, testnet where asked.

    Binance futures' testnet is now ccxt's "demo trading" (``set_sandbox_mode`` URLs are refused
    by ccxt >= 4.5 for futures): ``testnet: true`` enables that on Binance, the sandbox elsewhere."""
    cls = getattr(ccxt, exchange.id, None)
    if cls is None:
        raise LiveBrokerError(f"exchange {exchange.id!r} is not supported by ccxt")
    if not credentials.complete:
        raise LiveBrokerError(missing_keys_message(exchange.id))
    settings: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": exchange.timeout_ms,
        "apiKey": credentials.api_key.get_secret_value(),  # type: ignore[union-attr]
        "secret": credentials.api_secret.get_secret_value(),  # type: ignore[union-attr]
    }
    if exchange.id.startswith("binance"):
        settings["options"] = {"fetchCurrencies": False}  # a signed wallet call trading never needs
    client = cls(settings)
    if exchange.testnet:
        if exchange.id.startswith("binance"):
            client.enable_demo_trading(True)
        else:
            client.set_sandbox_mode(True)
    return client


def missing_keys_message(exchange_id: str) -> str:
    prefix = f"AUTOSCALP_{exchange_id.upper()}_"
    return (f"live trading on {exchange_id} needs API keys in the environment: {prefix}API_KEY and "
            f"{prefix}API_SECRET (or AUTOSCALP_API_KEY and AUTOSCALP_API_SECRET)")  # fmt: skip


class _Redacting(logging.Filter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self._redact(record.getMessage()), ()
        return True


def redacting_logger(redact: Redactor) -> logging.Logger:
    """ccxt's logger for one client: every request is logged at DEBUG with its headers (the API
    key) and signed URL; this one redacts them. Not registered with ``logging`` (one per broker,
    not kept forever); its records go on to ``serving.brokers.live.ccxt``."""
    logger = logging.Logger("serving.brokers.live.ccxt")
    logger.parent = logging.getLogger("serving.brokers.live.ccxt")
    logger.addFilter(_Redacting(redact))
    return logger


def order_request(order: Order) -> tuple[str, str, float, float | None, dict[str, Any]]:
    """ccxt ``create_order`` arguments (type, side, amount, price, params) of an order."""
    side = "buy" if order.side > 0 else "sell"
    params: dict[str, Any] = {"newClientOrderId": order.client_id}
    if order.reduce_only:
        params["reduceOnly"] = True
    if order.type == LIMIT:
        if order.post_only:
            params["postOnly"] = True  # timeInForce GTX: rejected rather than taking
        return "limit", side, order.qty, order.price, params
    if order.type == STOP:
        params["triggerPrice"] = order.price  # a market order once the last price reaches it: STOP_MARKET
        return "market", side, order.qty, None, params
    if order.type != MARKET:
        raise LiveBrokerError(f"order {order.client_id}: unknown order type {order.type!r}")
    return "market", side, order.qty, None, params


def order_from_exchange(raw: Mapping[str, Any], tag: str = "") -> Order:
    """Our ``Order`` of an exchange order we did not send from this process."""
    info = raw.get("info") or {}
    trigger = raw.get("triggerPrice")
    kind = STOP if trigger else (LIMIT if raw.get("type") == "limit" else MARKET)
    price = trigger if kind == STOP else (raw.get("price") or 0.0) if kind == LIMIT else 0.0
    reduce_only = bool(raw.get("reduceOnly")) or str(info.get("closePosition")).lower() == "true"
    return Order(str(raw.get("clientOrderId") or f"venue-{raw.get('id')}"), raw["symbol"],
                 1 if raw.get("side") == "buy" else -1, kind, float(price or 0.0), float(raw.get("amount") or 0.0),
                 bool(raw.get("postOnly")), reduce_only, tag)  # fmt: skip


def order_state(raw: Mapping[str, Any], order: Order) -> tuple[str, str]:
    """(state, OrderDone reason) of an exchange order. A post-only order that would have crossed
    is ``rejected``, as on the paper venue (Binance answers EXPIRED or error -5022)."""
    info = raw.get("info") or {}
    algo = info.get("algoStatus")
    filled = float(raw.get("filled") or 0.0)
    if algo in ("NEW", "TRIGGERING", "TRIGGERED"):
        return WORKING, ""  # triggered: its market order is on the book, fills follow
    if algo == "FINISHED":
        return (FILLED, "") if filled > QTY_EPS or actual_id(raw) else (CANCELLED, CANCELLED)
    status = raw.get("status")
    if status == "open":
        return WORKING, ""
    if status == "closed":
        return FILLED, ""
    if status == "expired":
        return (REJECTED, REJECTED) if order.post_only and filled <= QTY_EPS else (EXPIRED, EXPIRED)
    if status == "rejected":
        return REJECTED, REJECTED
    return CANCELLED, CANCELLED


def actual_id(raw: Mapping[str, Any]) -> str | None:
    actual = (raw.get("info") or {}).get("actualOrderId")
    return str(actual) if actual not in (None, "", 0, "0") else None


def is_stop(raw: Mapping[str, Any]) -> bool:
    return "algoId" in (raw.get("info") or {}) or bool(raw.get("triggerPrice"))
