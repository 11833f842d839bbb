"""The live broker: the engine's decisions as real orders on an exchange, through ccxt's REST API
(Binance USD-M first: ``binanceusdm``; the exchange id comes from the configuration).

At start, per symbol: one-way position mode is checked (``HeldPosition`` is a net position), the
margin mode is set to isolated and the leverage to the most the engine may use (isolated margin
locks notional / leverage per position, so a lower setting would refuse the engine's orders).

Orders carry our client id (``newClientOrderId``; ``clientAlgoId`` for stops). Post-only limits
go as GTX, reduce-only orders with ``reduceOnly``, stops as STOP_MARKET with their trigger price
and ``reduceOnly``: the protective stop lives at the exchange and fires even while we are down.
On Binance USD-M conditional orders go through the Algo Order API (``/fapi/v1/algoOrder``; the
order endpoint answers -4120): ccxt >= 4.5 routes them there, where the trigger is ``triggerPrice``
(``stopPrice`` on the order endpoint) and they are looked up, listed and cancelled apart.

Never twice: an order whose request failed without an answer (a timeout, a dropped connection:
``ccxt.NetworkError``) may have reached the exchange. It is looked up by client id, never sent
again: found, it is adopted; not found, it stays ``pending`` (in flight) and ``poll`` looks again
until the exchange can no longer accept it (Binance refuses a signed request older than
``recvWindow``), then it is reported ``expired``. A client id the exchange already knows (-4116)
is adopted the same way.

Fills and order updates are polled (``poll``: ``fetch_my_trades`` and ``fetch_open_orders``,
at most every ``poll_interval_s`` of wall time, at once after an order was sent; ~7 request
weight per symbol a poll, of Binance's 2,400 a minute). A user-data websocket
(ORDER_TRADE_UPDATE, ALGO_UPDATE, ACCOUNT_UPDATE) would bring them in milliseconds: not built yet.
Funding payments are not reported yet (the wallet, read at restart, includes them). ccxt's rate
limiter is on: a call may wait in the trading thread rather than be refused.

Keys come from the environment only (``pipeline.config.Credentials``). ccxt's messages can hold
request URLs with their signature and the raw response: every error is re-raised as a one-line
``LiveBrokerError`` with query strings, key-like fields and the key values removed, and never
chained to the original (``from None``), so no traceback carries them either. ccxt also logs
every request with its headers (the API key) at DEBUG: the client gets a logger that redacts.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ccxt

from pipeline.config import Credentials, ExchangeConfig
from pipeline.data.sources.exchange.retry import Redactor, Retrier
from serving.brokers.base import (
    CANCELLED, EXPIRED, FILLED, FINAL_STATES, PENDING, REJECTED, WORKING, HeldPosition, MarketEvent, OrderStatus,
    VenueEvent,
)  # fmt: skip
from serving.brokers.exchange_orders import (
    QTY_EPS, ExchangeUnreachableError, LiveBrokerError, actual_id, is_stop, missing_keys_message, order_from_exchange,
    order_request, order_state, redacting_logger, trading_client,
)  # fmt: skip
from serving.events import STOP, DecisionRecord, Fill, Order, OrderDone

log = logging.getLogger(__name__)

T = TypeVar("T")
MS = 1_000_000
# Binance: ^[\.A-Z\:/a-z0-9_-]{1,36}$ for newClientOrderId and clientAlgoId.
_CLIENT_ID = re.compile(r"^[.A-Za-z:/0-9_-]{1,36}$")
_TRADES_PAGE = 1000  # Binance userTrades' largest page
_TRADES_HISTORY_MS = 7 * 24 * 3600 * 1000 - 60_000  # Binance userTrades: 7 days a query
_FILL_OVERLAP_MS = 60_000  # the first poll looks back this far: the journal books a fill once
_POLL_OVERLAP_MS = 2_000  # later polls re-read this much (a trade stamped just before the last one)
_FORGET_NS = 3600 * 10**9  # final orders kept this long (late fills, lookups without a request)
_NOT_FOUND_CODES = ("-2013", "-2011", "-20124")  # order does not exist / unknown order / algo id


@dataclass
class _Sent:
    """What we know of one order we sent: the exchange's id once known (for a triggered stop,
    also the id of the market order it became), and how much of it filled."""

    order: Order
    state: str
    sent_wall_ns: int
    exchange_id: str | None = None
    actual_id: str | None = None  # a triggered stop's matching-engine order
    filled_qty: float = 0.0
    fill_ids: set[str] = field(default_factory=set)
    cancel_wanted: bool = False  # a cancel not confirmed yet (in flight, or the exchange unreachable)
    final_wall_ns: int = 0  # when it reached a final state (forgotten a while after)


class LiveBroker:
    """A ``Broker`` on a real exchange account (see module doc). ``client`` injects a ready ccxt
    exchange (tests); by default one is built from ``exchange`` and ``credentials``.
    ``leverage``: the exchange setting per symbol (or one for all)."""

    def __init__(self, exchange: ExchangeConfig, credentials: Credentials, symbols: Sequence[str],
                 leverage: Mapping[str, int] | int = 1, *, client: Any = None, margin_mode: str = "isolated",
                 poll_interval_s: float = 1.0, sleep: Callable[[float], Any] = time.sleep,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:  # fmt: skip
        if not symbols:
            raise LiveBrokerError("the live broker needs at least one symbol")
        self.exchange, self.symbols = exchange, tuple(symbols)
        secrets = [s.get_secret_value() for s in (credentials.api_key, credentials.api_secret) if s is not None]
        self._retrier = Retrier(exchange, Redactor(secrets), sleep)
        self._sleep, self._wall_ns = sleep, wall_ns
        self.client = client if client is not None else trading_client(exchange, credentials)
        self.client.logger = redacting_logger(self._retrier.redact)  # ccxt logs request headers at DEBUG
        self._poll_every_ns = int(poll_interval_s * 1e9)
        self._last_poll_ns = -(2**62)
        self._poll_due = False
        # A signed request older than this is refused by Binance: an order unknown this long after
        # it was sent never got there.
        recv_window_ms = int(self.client.options.get("recvWindow") or 10_000)
        self._in_flight_ns = (recv_window_ms + exchange.timeout_ms) * MS + 1_000 * MS
        self._sent: dict[str, _Sent] = {}
        self._by_exchange_id: dict[str, str] = {}  # exchange order id -> client id
        start_ms = wall_ns() // MS
        self._fills_from_ms = dict.fromkeys(self.symbols, start_ms - _FILL_OVERLAP_MS)
        self._seen_fills: dict[str, dict[str, int]] = {s: {} for s in self.symbols}  # fill id -> time ms
        levels = leverage if isinstance(leverage, Mapping) else dict.fromkeys(self.symbols, leverage)
        self._prepare(levels, margin_mode)

    # ---- start ------------------------------------------------------------------------------

    def _prepare(self, leverage: Mapping[str, int], margin_mode: str) -> None:
        client = self.client
        if not client.markets:
            self._call("load_markets", client.load_markets)
        for symbol in self.symbols:
            market = self._call(f"market({symbol})", lambda s=symbol: client.market(s))
            if not market.get("contract"):
                raise LiveBrokerError(f"{self.exchange.id} {symbol} is not a futures contract")
            if client.has.get("fetchPositionMode"):
                mode = self._call(f"fetch_position_mode({symbol})", lambda s=symbol: client.fetch_position_mode(s))
                if mode.get("hedged"):
                    raise LiveBrokerError(f"{self.exchange.id}: the account is in hedge mode; the live broker "
                                          "needs one-way mode (net positions)")  # fmt: skip
            self._call(f"set_margin_mode({margin_mode}, {symbol})",
                       lambda s=symbol: self._set_margin_mode(margin_mode, s))  # fmt: skip
            level = int(leverage.get(symbol, 1))
            self._call(f"set_leverage({level}, {symbol})", lambda s=symbol, n=level: client.set_leverage(n, s))
            log.info("%s %s: %s margin, leverage %d", self.exchange.id, symbol, margin_mode, level)

    def _set_margin_mode(self, mode: str, symbol: str) -> Any:
        try:
            return self.client.set_margin_mode(mode, symbol)
        except ccxt.ExchangeError as exc:
            if "-4046" in str(exc):  # "No need to change margin type.": already set
                return None
            raise

    # ---- the Broker protocol ------------------------------------------------------------------

    def submit(self, record: DecisionRecord, ts_ns: int) -> list[VenueEvent]:
        events: list[VenueEvent] = []
        for cancel in record.cancels:
            events += self._cancel(cancel.client_id, cancel.symbol, ts_ns)
        for order in record.orders:
            events += self._create(order, ts_ns)
        if record.orders:
            self._poll_due = True
        return events

    def poll(self, ts_ns: int) -> list[VenueEvent]:
        now = self._wall_ns()
        if not self._poll_due and now - self._last_poll_ns < self._poll_every_ns:
            return []
        self._poll_due = False
        self._last_poll_ns = now
        events: list[VenueEvent] = []
        try:  # each step books what it returns: on a network failure the rest waits for the next poll
            for symbol in self.symbols:
                self._poll_symbol(symbol, ts_ns, events)
            self._resolve_in_flight(ts_ns, now, events)
            for sent in [s for s in self._sent.values() if s.cancel_wanted and s.state == WORKING]:
                events += self._cancel(sent.order.client_id, sent.order.symbol, ts_ns)
        except ExchangeUnreachableError as exc:
            log.warning("poll: %s; polled again in %.3g s", exc, self._poll_every_ns / 1e9)
        self._forget(now)
        return events

    def _poll_symbol(self, symbol: str, ts_ns: int, out: list[VenueEvent]) -> None:
        # Orders that left the book (filled, ended, a stop that fired) are looked up before the
        # trades are read, so that a fired stop's trades are known as the stop's.
        gone = [(self._sent[cid], self._find(cid)) for cid in self._gone_from_book(symbol)]
        for sent, found in gone:
            if found is not None:
                self._note_ids(sent, found[0])
        out += self._new_fills(symbol)
        for sent, found in gone:
            if found is not None:
                out += self._track(sent, found[0], ts_ns)

    def on_market(self, event: MarketEvent) -> list[VenueEvent]:
        return []  # the exchange has its own market

    def lookup(self, client_id: str) -> OrderStatus | None:
        found = self._find(client_id)
        if found is None:
            return None
        raw, sent = found
        order = sent.order if sent is not None else order_from_exchange(raw)
        state, reason = order_state(raw, order)
        fills = tuple(self._fills_of(order.symbol, raw, client_id))
        return OrderStatus(order, state, sum(f.qty for f in fills), reason, fills)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        out = []
        for s in (symbol,) if symbol is not None else self.symbols:
            for raw in self._open_raw(s, stops=False) + self._open_raw(s, stops=True):
                sent = self._sent.get(raw.get("clientOrderId") or "")
                out.append((raw.get("timestamp") or 0, sent.order if sent else order_from_exchange(raw)))
        in_flight = [(s.sent_wall_ns // MS, s.order) for s in self._sent.values()
                     if s.state == PENDING and (symbol is None or s.order.symbol == symbol)]  # fmt: skip
        return [o for _, o in sorted(out + in_flight, key=lambda pair: pair[0])]

    def positions(self) -> dict[str, HeldPosition]:
        held = {}
        for p in self._call("fetch_positions", lambda: self.client.fetch_positions(list(self.symbols))):
            contracts = float(p.get("contracts") or 0.0) * float(p.get("contractSize") or 1.0)
            if contracts and p.get("symbol") in self.symbols:
                qty = contracts if p.get("side") == "long" else -contracts
                held[p["symbol"]] = HeldPosition(qty, float(p.get("entryPrice") or 0.0))
        return held

    def fills_since(self, ts_ns: int) -> list[Fill]:
        fills = []
        for symbol in self.symbols:
            fills += [self._fill(symbol, t) for t in self._trades(symbol, ts_ns // MS)]
        return sorted(fills, key=lambda f: f.ts_ns)

    def wallet_usdt(self) -> float:
        balance = self._call("fetch_balance", self.client.fetch_balance)
        info = balance.get("info") or {}
        for asset in info.get("assets") or ():
            if asset.get("asset") == "USDT" and asset.get("walletBalance") is not None:
                return float(asset["walletBalance"])
        if info.get("totalWalletBalance") is not None:
            return float(info["totalWalletBalance"])
        return float((balance.get("total") or {}).get("USDT") or 0.0)

    def close(self) -> None:
        session = getattr(self.client, "session", None)
        if session is not None and hasattr(session, "close"):
            session.close()

    # ---- orders -------------------------------------------------------------------------------

    def _create(self, order: Order, ts_ns: int) -> list[VenueEvent]:
        if not _CLIENT_ID.match(order.client_id):
            raise LiveBrokerError(f"client id {order.client_id!r} is not valid on {self.exchange.id} "
                                  "(1-36 of A-Z a-z 0-9 . : / _ -)")  # fmt: skip
        if order.client_id in self._sent:
            raise LiveBrokerError(f"client id {order.client_id} was already sent; nothing of this order was sent")
        kind, side, qty, price, params = order_request(order)
        sent = self._sent[order.client_id] = _Sent(order, PENDING, self._wall_ns())
        try:
            raw = self.client.create_order(order.symbol, kind, side, qty, price, params)
        except ccxt.NetworkError as exc:
            log.warning("%s create %s: %s; looking it up by client id (never sent twice)", self.exchange.id,
                        order.client_id, self._retrier.reason(exc))  # fmt: skip
            return self._adopt_or_wait(sent, ts_ns)
        except (ccxt.InvalidOrder, ccxt.InsufficientFunds) as exc:
            if "-4116" in str(exc):  # the exchange already has this client id: it is that order
                return self._adopt_or_wait(sent, ts_ns)
            log.info("%s refused %s: %s", self.exchange.id, order.client_id, self._retrier.reason(exc))
            self._final(sent, REJECTED)
            return [OrderDone(order.symbol, ts_ns, order.client_id, REJECTED)]
        except ccxt.BaseError as exc:
            del self._sent[order.client_id]
            raise self._error(f"create_order {order.client_id}", exc) from None
        return self._track(sent, raw, ts_ns)

    def _adopt_or_wait(self, sent: _Sent, ts_ns: int) -> list[VenueEvent]:
        try:
            found = self._find(sent.order.client_id)
        except LiveBrokerError as exc:
            log.warning("%s: %s; %s stays in flight, looked up at the next poll", self.exchange.id, exc,
                        sent.order.client_id)  # fmt: skip
            return []
        if found is None:
            return []  # in flight or lost: poll looks again until it cannot arrive any more
        return self._track(sent, found[0], ts_ns)

    def _track(self, sent: _Sent, raw: Mapping[str, Any], ts_ns: int) -> list[VenueEvent]:
        """The exchange's answer about an order we sent: its id, state, and what already filled
        (a market order's fills come with its answer; later ones by ``poll``)."""
        order = sent.order
        self._note_ids(sent, raw)
        state, reason = order_state(raw, order)
        events: list[VenueEvent] = []
        if float(raw.get("filled") or 0.0) > sent.filled_qty + QTY_EPS:
            events += self._record_fills(sent, self._fills_of(order.symbol, raw, order.client_id))
        if sent.state in FINAL_STATES:
            return events
        if state in FINAL_STATES:
            self._final(sent, state)
            if state != FILLED:
                events.append(OrderDone(order.symbol, ts_ns, order.client_id, reason))
        else:
            sent.state = state
        return events

    def _cancel(self, client_id: str, symbol: str, ts_ns: int) -> list[VenueEvent]:
        sent = self._sent.get(client_id)
        if sent is not None and sent.state in FINAL_STATES:
            return []
        # An order we did not send from this process (before a restart) may be a stop (an algo order).
        kinds = ((sent.order.type == STOP),) if sent is not None else (False, True)
        try:
            for stop in kinds:
                params: dict[str, Any] = {"origClientOrderId": client_id, **({"trigger": True} if stop else {})}
                try:
                    self._call(f"cancel_order {client_id}", lambda p=params: self.client.cancel_order(None, symbol, p),
                               not_found_ok=False)  # fmt: skip
                except _NotFound:
                    continue
                if sent is not None:
                    self._final(sent, CANCELLED)
                return [OrderDone(symbol, ts_ns, client_id, CANCELLED)]
            # Filled, ended, or not there (yet): the exchange's record says which; fills come by poll.
            events = self._settle(client_id, ts_ns)
        except ExchangeUnreachableError as exc:
            log.warning("%s; the cancel of %s is tried again at the next poll", exc, client_id)
            events = []
        sent = self._sent.get(client_id)
        if sent is not None and sent.state not in FINAL_STATES:
            sent.cancel_wanted = True  # in flight or unreachable: cancelled once it shows up
        return events

    def _settle(self, client_id: str, ts_ns: int) -> list[VenueEvent]:
        """An order no longer on the book: its final state from the exchange."""
        sent = self._sent.get(client_id)
        found = self._find(client_id)
        if found is None:
            return []  # unknown: in flight (poll resolves it) or not ours
        raw = found[0]
        if sent is None:
            sent = self._sent[client_id] = _Sent(order_from_exchange(raw), WORKING, self._wall_ns())
        return self._track(sent, raw, ts_ns)

    def _resolve_in_flight(self, ts_ns: int, now_ns: int, out: list[VenueEvent]) -> None:
        for sent in [s for s in self._sent.values() if s.state == PENDING]:
            found = self._find(sent.order.client_id)
            if found is not None:
                out += self._track(sent, found[0], ts_ns)
            elif now_ns - sent.sent_wall_ns > self._in_flight_ns:
                log.warning("%s: %s never reached the exchange; reported expired, not sent again",
                            self.exchange.id, sent.order.client_id)  # fmt: skip
                self._final(sent, EXPIRED)
                out.append(OrderDone(sent.order.symbol, ts_ns, sent.order.client_id, EXPIRED))

    # ---- reading the exchange -------------------------------------------------------------------

    def _find(self, client_id: str) -> tuple[Mapping[str, Any], _Sent | None] | None:
        """The exchange's order with this client id, or None. A stop is an algo order on Binance
        USD-M, kept apart from the others: an unknown id is looked up both ways."""
        sent = self._sent.get(client_id)
        symbols = (sent.order.symbol,) if sent is not None else self.symbols
        kinds = ((sent.order.type == STOP),) if sent is not None else (False, True)
        for symbol in symbols:
            for stop in kinds:
                params: dict[str, Any] = {"origClientOrderId": client_id, **({"trigger": True} if stop else {})}
                try:
                    raw = self._call(f"fetch_order {client_id}", lambda s=symbol, p=params: self.client.fetch_order(
                        None, s, p), not_found_ok=False)  # fmt: skip
                except _NotFound:
                    continue
                return raw, sent
        return None

    def _open_raw(self, symbol: str, stops: bool) -> list[Mapping[str, Any]]:
        params = {"trigger": True} if stops else {}
        return list(self._call(f"fetch_open_orders({symbol})",
                               lambda: self.client.fetch_open_orders(symbol, None, None, params)))  # fmt: skip

    def _gone_from_book(self, symbol: str) -> list[str]:
        """Our working orders of ``symbol`` the exchange no longer lists as open."""
        working = [s for s in self._sent.values() if s.state == WORKING and s.order.symbol == symbol]
        if not working:
            return []
        listed = set()
        for stops in {s.order.type == STOP for s in working}:
            listed |= {raw.get("clientOrderId") for raw in self._open_raw(symbol, stops)}
        return [s.order.client_id for s in working if s.order.client_id not in listed]

    def _new_fills(self, symbol: str) -> list[VenueEvent]:
        seen = self._seen_fills[symbol]
        trades = self._trades(symbol, self._fills_from_ms[symbol])
        # Every client id is known before anything is booked: a failure here books nothing.
        fills = [(self._fill(symbol, t), int(t["timestamp"])) for t in trades if str(t["id"]) not in seen]
        events: list[VenueEvent] = []
        for fill, ts_ms in fills:
            seen[fill.fill_id] = ts_ms
            sent = self._sent.get(fill.client_id)
            events += self._record_fills(sent, [fill]) if sent is not None else [fill]
        if trades:
            self._fills_from_ms[symbol] = max(self._fills_from_ms[symbol],
                                              max(int(t["timestamp"]) for t in trades) - _POLL_OVERLAP_MS)  # fmt: skip
        return events

    def _record_fills(self, sent: _Sent, fills: Sequence[Fill]) -> list[VenueEvent]:
        out: list[VenueEvent] = []
        for fill in fills:
            if fill.fill_id in sent.fill_ids:
                continue
            sent.fill_ids.add(fill.fill_id)
            self._seen_fills.setdefault(fill.symbol, {})[fill.fill_id] = fill.ts_ns // MS
            sent.filled_qty += fill.qty
            out.append(fill)
        if sent.filled_qty >= sent.order.qty - QTY_EPS and sent.state in (PENDING, WORKING):
            self._final(sent, FILLED)
        return out

    def _trades(self, symbol: str, since_ms: int, params: Mapping[str, Any] | None = None) -> list[dict]:
        """Our trades of ``symbol`` from ``since_ms`` on, page by page, oldest first."""
        out: list[dict] = []
        oldest_ms = self._wall_ns() // MS - _TRADES_HISTORY_MS
        if since_ms < oldest_ms and not params:
            since_ms = oldest_ms  # Binance keeps a window of 7 days per query; older fills are the journal's
        ids: set[str] = set()
        while True:
            page = self._call(f"fetch_my_trades({symbol})", lambda: self.client.fetch_my_trades(
                symbol, since_ms, _TRADES_PAGE, dict(params or {})))  # fmt: skip
            out += [t for t in page if str(t["id"]) not in ids]
            ids.update(str(t["id"]) for t in page)
            if len(page) < _TRADES_PAGE or params:
                return out
            # the next page from the last trade's time (Binance: startTime is inclusive)
            last_ms = int(page[-1]["timestamp"])
            since_ms = last_ms if last_ms > since_ms else since_ms + 1

    def _fills_of(self, symbol: str, raw: Mapping[str, Any], client_id: str) -> list[Fill]:
        """The executions of one order (a triggered stop's: of the market order it became)."""
        order_id = actual_id(raw) or raw.get("id")
        if order_id is None or (is_stop(raw) and actual_id(raw) is None):
            return []
        self._by_exchange_id[str(order_id)] = client_id
        trades = self._call(f"fetch_my_trades({symbol}, order {order_id})",
                            lambda: self.client.fetch_my_trades(symbol, None, None, {"orderId": order_id}))  # fmt: skip
        return [self._fill(symbol, t) for t in trades]

    def _fill(self, symbol: str, trade: Mapping[str, Any]) -> Fill:
        order_id = str(trade.get("order"))
        client_id = self._by_exchange_id.get(order_id) or self._client_id_of(symbol, order_id)
        fee = trade.get("fee") or {}
        fee_usdt = float(fee["cost"]) if fee.get("currency") == "USDT" and fee.get("cost") is not None else 0.0
        return Fill(symbol, int(trade["timestamp"]) * MS, client_id, float(trade["price"]), float(trade["amount"]),
                    1 if trade["side"] == "buy" else -1, fee_usdt, str(trade["id"]))  # fmt: skip

    def _client_id_of(self, symbol: str, order_id: str) -> str:
        """An order we did not send from this process (before a restart, a liquidation, a stop
        that triggered): its client id from the exchange."""
        try:
            raw = self._call(f"fetch_order {order_id}", lambda: self.client.fetch_order(order_id, symbol),
                             not_found_ok=False)  # fmt: skip
            client_id = raw.get("clientOrderId") or f"venue-{order_id}"
        except _NotFound:
            client_id = f"venue-{order_id}"
        stop = next((s for s in self._sent.values() if s.actual_id == order_id), None)
        client_id = stop.order.client_id if stop is not None else client_id
        self._by_exchange_id[order_id] = client_id
        return client_id

    def _note_ids(self, sent: _Sent, raw: Mapping[str, Any]) -> None:
        if raw.get("id") is not None:
            sent.exchange_id = str(raw["id"])
            self._by_exchange_id.setdefault(sent.exchange_id, sent.order.client_id)
        actual = actual_id(raw)
        if actual is not None:
            sent.actual_id = actual
            self._by_exchange_id[actual] = sent.order.client_id

    def _final(self, sent: _Sent, state: str) -> None:
        sent.state, sent.cancel_wanted, sent.final_wall_ns = state, False, self._wall_ns()

    def _forget(self, now_ns: int) -> None:
        """Memory stays bounded: final orders and seen fills are dropped a while after they stop
        mattering (a late fill of a forgotten order still maps by asking the exchange)."""
        old = [cid for cid, s in self._sent.items()
               if s.state in FINAL_STATES and now_ns - s.final_wall_ns > _FORGET_NS]  # fmt: skip
        for cid in old:
            sent = self._sent.pop(cid)
            for order_id in (sent.exchange_id, sent.actual_id):
                self._by_exchange_id.pop(order_id or "", None)
        for symbol, seen in self._seen_fills.items():
            floor = self._fills_from_ms[symbol] - _POLL_OVERLAP_MS
            if len(seen) > 1_000:
                self._seen_fills[symbol] = {k: ts for k, ts in seen.items() if ts >= floor}
        if len(self._by_exchange_id) > 10_000:  # ids learnt from the exchange for fills of others' orders
            keep = {i for s in self._sent.values() for i in (s.exchange_id, s.actual_id) if i}
            self._by_exchange_id = {k: v for k, v in self._by_exchange_id.items() if k in keep}

    # ---- errors -------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T], not_found_ok: bool = True) -> T:
        """Run an idempotent exchange call, retrying network failures with the configured backoff.
        ``not_found_ok`` False: an unknown order raises ``_NotFound`` (the caller's answer)."""
        attempt = 0
        while True:
            try:
                return fn()
            except ccxt.NetworkError as exc:
                if attempt >= self.exchange.max_retries:
                    raise ExchangeUnreachableError(f"{self.exchange.id} unreachable: {what} failed after {attempt} "
                                                   f"retries: {self._retrier.reason(exc)}") from None  # fmt: skip
                delay = self._retrier.delay(attempt)
                log.warning("%s %s: %s; retry %d/%d in %.3g s", self.exchange.id, what, self._retrier.reason(exc),
                            attempt + 1, self.exchange.max_retries, delay)  # fmt: skip
            except ccxt.BaseError as exc:
                if not not_found_ok and _not_found(exc):
                    raise _NotFound() from None
                raise self._error(what, exc) from None
            self._sleep(delay)
            attempt += 1

    def _error(self, what: str, exc: BaseException) -> LiveBrokerError:
        return LiveBrokerError(f"{self.exchange.id} {what} failed: {self._retrier.reason(exc)}")


class _NotFound(Exception):
    """The exchange does not know the order (an answer, not a failure)."""


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, ccxt.OrderNotFound) or any(code in str(exc) for code in _NOT_FOUND_CODES)


__all__ = ["ExchangeUnreachableError", "LiveBroker", "LiveBrokerError", "missing_keys_message", "trading_client"]
