"""LiveBroker through ccxt's real code paths, offline.

A real ``ccxt.binanceusdm`` with the recorded Binance markets and options (ccxt's own static test
fixtures, ../shared/data/ccxt_recorded); only its HTTP session is replaced, by a small Binance
USD-M account (``FakeBinance``) that records every request (method, path, decoded params, headers)
and answers with the recorded ``httpResponse`` bodies (a USD-M order from ``createOrders``, a
USD-M user trade from ``fetchMyTrades``, positions, balance) with our values put in. So ccxt's
request building (client ids, GTX, reduceOnly, STOP_MARKET through the algo API, signing), error
mapping and parsers all run. Bodies the recordings lack (algo orders, leverage, margin type,
position mode) are Binance's documented examples, cited where used.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ccxt
import pytest
import requests

from pipeline.config import Credentials, ExchangeConfig
from serving.brokers.base import CANCELLED, EXPIRED, FILLED, PENDING, REJECTED, WORKING, HeldPosition
from serving.brokers.live import LiveBroker, LiveBrokerError, missing_keys_message
from serving.events import LIMIT, MARKET, STOP, Cancel, DecisionRecord, Fill, Order, OrderDone

pytestmark = pytest.mark.realdata

SYMBOL = "BTC/USDT:USDT"
API_KEY = "AKTEST-live-key-2b7e151628aed2a6"
API_SECRET = "SECRET-live-never-print-abf71588"
T0 = 1_723_161_000 * 10**9
MS = 1_000_000
SIGNATURE = re.compile(r"[0-9a-f]{64}")  # an HMAC-SHA256 signature

# Binance's documented answers (developers.binance.com, USD-M futures: Change Initial Leverage,
# Change Margin Type, Get Current Position Mode); the recordings have none of these calls.
LEVERAGE_REPLY = {"leverage": 0, "maxNotionalValue": "1000000", "symbol": "BTCUSDT"}
MARGIN_TYPE_REPLY = {"code": 200, "msg": "success"}
DUAL_REPLY = {"dualSidePosition": False}
# A USD-M conditional (algo) order as ccxt 4.5.90 documents it in binance.parse_order (the
# recordings predate the algo API), plus the fields Binance adds once it triggers.
ALGO_TEMPLATE = {
    "algoId": 3358, "clientAlgoId": "yT58zmV3DSzMBQxc5tAJXU", "algoType": "CONDITIONAL", "orderType": "STOP_MARKET",
    "symbol": "BTCUSDT", "side": "BUY", "positionSide": "BOTH", "timeInForce": "GTC", "quantity": "0.002",
    "algoStatus": "NEW", "triggerPrice": "100000.00", "price": "0.00", "icebergQuantity": None,
    "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": "CONTRACT_PRICE", "priceMatch": "NONE",
    "closePosition": False, "priceProtect": False, "reduceOnly": False, "createTime": 1763458576201,
    "updateTime": 1763458576201, "triggerTime": 0, "goodTillDate": 0,
}  # fmt: skip


# ----------------------------------------------------------------------------- the fake account


@pytest.fixture(scope="module")
def recorded(shared_data: Path) -> dict[str, Any]:
    folder = shared_data / "ccxt_recorded"
    if not (folder / "response_binance.json").is_file():
        pytest.skip(f"{folder} has no ccxt recordings")
    return {"response": json.loads((folder / "response_binance.json").read_text()),
            "markets": json.loads((folder / "markets_binance.json").read_text())}  # fmt: skip


def recorded_body(recorded: dict[str, Any], method: str, description: str) -> Any:
    return next(c for c in recorded["response"]["methods"][method] if c["description"] == description)["httpResponse"]


class Request:
    def __init__(self, method: str, url: str, headers: dict, body: str | None) -> None:
        parts = urlsplit(url)
        self.method, self.url, self.host, self.path = method, url, parts.netloc, parts.path
        self.headers = dict(headers or {})
        body = body.decode() if isinstance(body, bytes) else body or ""
        self.params = dict(parse_qsl(parts.query)) | dict(parse_qsl(body))

    def __repr__(self) -> str:
        return f"{self.method} {self.path} {self.params}"


class FakeBinance(requests.Session):
    """A one-symbol Binance USD-M account behind ccxt's HTTP session (see module doc).

    ``fail(method, path, reached=...)``: the next such request times out; ``reached`` True: the
    exchange got it (the reply was lost), False: it did not (yet: ``held`` keeps it on the way
    until ``deliver_held``). ``fill``/``end``/``trigger`` are what the exchange does on its own."""

    def __init__(self, recorded: dict[str, Any]) -> None:
        super().__init__()
        self.order_template = recorded_body(recorded, "createOrders", "create swap orders")[0]
        self.trade_template = recorded_body(recorded, "fetchMyTrades", "Swap private trade")[0]
        self.positions = recorded_body(recorded, "fetchPositions", "Fetch linear positions with symbols")
        self.balance = recorded_body(recorded, "fetchBalance", "Linear swap balance")
        self.requests: list[Request] = []
        self.orders: dict[str, dict] = {}  # client id -> order body
        self.algo: dict[str, dict] = {}  # client algo id -> algo order body
        self.trades: list[dict] = []
        self.failures: list[tuple[str, str, bool]] = []
        self.replies: dict[tuple[str, str], Any] = {}  # (method, path) -> (status, body) to answer once
        self.hold = False  # a lost request is delayed (delivered by deliver_held), not dropped
        self.held: list[Request] = []
        self._ids = count(8_389_765_519_993_908_000)
        self._trade_ids = count(272_536_300)
        self.now_ms = T0 // MS

    # -- what the exchange does on its own --

    def fill(self, client_id: str, price: float, qty: float, maker: bool = True) -> dict:
        order = self.orders[client_id]
        executed = float(order["executedQty"]) + qty
        done = executed >= float(order["origQty"]) - 1e-12
        order.update(executedQty=f"{executed:.3f}", avgPrice=f"{price:.2f}",
                     status="FILLED" if done else "PARTIALLY_FILLED")  # fmt: skip
        return self._trade(order, price, qty, maker)

    def end(self, client_id: str, status: str) -> None:
        self.orders[client_id]["status"] = status

    def trigger(self, client_id: str, price: float) -> dict:
        """A stop fires: its market order is created (a new order id) and fills."""
        algo = self.algo[client_id]
        market = self._order({"symbol": "BTCUSDT", "side": algo["side"], "type": "MARKET",
                              "quantity": algo["quantity"], "reduceOnly": str(algo["reduceOnly"]).lower(),
                              "newClientOrderId": f"stop-{algo['algoId']}"}, fill_px=price)  # fmt: skip
        algo.update(algoStatus="FINISHED", actualOrderId=market["orderId"], actualPrice=f"{price:.2f}",
                    executedQty=algo["quantity"], avgPrice=f"{price:.2f}")  # fmt: skip
        return self.trades[-1]

    def deliver_held(self) -> None:
        for request in self.held:
            self._answer(request)
        self.held.clear()

    def fail(self, method: str, path: str, reached: bool) -> None:
        self.failures.append((method, path, reached))

    def sent(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # -- the HTTP side --

    def request(self, method: str, url: str, *args: Any, headers: Any = None, data: Any = None,
                **kwargs: Any) -> requests.Response:  # fmt: skip
        request = Request(method, url, headers, data)
        self.requests.append(request)
        failure = next((f for f in self.failures if f[:2] == (method, request.path)), None)
        if failure is not None:
            self.failures.remove(failure)
            if failure[2]:
                self._answer(request)
            elif self.hold:
                self.held.append(request)
            raise requests.exceptions.ReadTimeout(f"HTTPSConnectionPool(host='{request.host}'): Read timed out.")
        status, body = self._answer(request)
        response = requests.Response()
        response.status_code, response.reason, response.url = status, "OK" if status == 200 else "Bad Request", url
        response.encoding = "utf-8"
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps(body).encode()
        return response

    def _answer(self, r: Request) -> tuple[int, Any]:
        once = self.replies.pop((r.method, r.path), None)
        if once is not None:
            return once
        p = r.params
        route = (r.method, r.path)
        if route == ("GET", "/fapi/v1/positionSide/dual"):
            return 200, DUAL_REPLY
        if route == ("POST", "/fapi/v1/marginType"):
            return 200, MARGIN_TYPE_REPLY
        if route == ("POST", "/fapi/v1/leverage"):
            return 200, {**LEVERAGE_REPLY, "leverage": int(p["leverage"])}
        if route == ("POST", "/fapi/v1/order"):
            if p["newClientOrderId"] in self.orders:
                return 400, {"code": -4116, "msg": "ClientOrderId is duplicated."}
            return 200, self._order(p)
        if route == ("POST", "/fapi/v1/algoOrder"):
            return 200, self._algo(p)
        if route == ("GET", "/fapi/v1/order"):
            order = self.orders.get(p.get("origClientOrderId", "")) or next(
                (o for o in self.orders.values() if str(o["orderId"]) == p.get("orderId")), None)
            return (200, order) if order else (400, {"code": -2013, "msg": "Order does not exist."})
        if route == ("GET", "/fapi/v1/algoOrder"):
            algo = self.algo.get(p.get("clientAlgoId", ""))
            return (200, algo) if algo else (400, {"code": -2013, "msg": "Order does not exist."})
        if route == ("DELETE", "/fapi/v1/order"):
            order = self.orders.get(p.get("origClientOrderId", ""))
            if order is None or order["status"] not in ("NEW", "PARTIALLY_FILLED"):
                return 400, {"code": -2011, "msg": "Unknown order sent."}
            order["status"] = "CANCELED"
            return 200, order
        if route == ("DELETE", "/fapi/v1/algoOrder"):
            algo = self.algo.get(p.get("clientAlgoId", ""))
            if algo is None or algo["algoStatus"] != "NEW":
                return 400, {"code": -2011, "msg": "Unknown order sent."}
            algo["algoStatus"] = "CANCELED"
            return 200, {"algoId": algo["algoId"], "clientAlgoId": algo["clientAlgoId"], "code": "200",
                         "msg": "success"}  # fmt: skip
        if route == ("GET", "/fapi/v1/openOrders"):
            return 200, [o for o in self.orders.values() if o["status"] in ("NEW", "PARTIALLY_FILLED")]
        if route == ("GET", "/fapi/v1/openAlgoOrders"):
            return 200, [a for a in self.algo.values() if a["algoStatus"] == "NEW"]
        if route == ("GET", "/fapi/v1/userTrades"):
            trades = [t for t in self.trades if ("orderId" not in p or str(t["orderId"]) == p["orderId"])
                      and int(t["time"]) >= int(p.get("startTime", 0))]  # fmt: skip
            return 200, trades[: int(p.get("limit", 500))]
        if route == ("GET", "/fapi/v3/positionRisk"):
            return 200, self.positions
        if route == ("GET", "/fapi/v3/account"):
            return 200, self.balance
        return 404, {"code": -1, "msg": f"no recording for {r.method} {r.path}"}

    def _order(self, p: dict, fill_px: float = 60_000.0) -> dict:
        self.now_ms += 1
        order = {**self.order_template, "orderId": next(self._ids), "clientOrderId": p["newClientOrderId"],
                 "type": p["type"], "origType": p["type"], "side": p["side"], "origQty": p["quantity"],
                 "price": p.get("price", "0"), "timeInForce": p.get("timeInForce", "GTC"),
                 "reduceOnly": p.get("reduceOnly") == "true", "status": "NEW", "executedQty": "0.000",
                 "cumQty": "0.000", "updateTime": self.now_ms}  # fmt: skip
        self.orders[order["clientOrderId"]] = order
        if p["type"] == "MARKET":  # takes the book at once
            self.fill(order["clientOrderId"], fill_px, float(p["quantity"]), maker=False)
        return dict(order)

    def _algo(self, p: dict) -> dict:
        self.now_ms += 1
        algo = {**ALGO_TEMPLATE, "algoId": next(self._ids), "clientAlgoId": p["clientAlgoId"],
                "orderType": p["type"], "side": p["side"], "quantity": p["quantity"],
                "triggerPrice": p["triggerPrice"], "reduceOnly": p.get("reduceOnly") == "true",
                "createTime": self.now_ms, "updateTime": self.now_ms}  # fmt: skip
        self.algo[algo["clientAlgoId"]] = algo
        return dict(algo)

    def _trade(self, order: dict, price: float, qty: float, maker: bool) -> dict:
        self.now_ms += 1
        trade = {**self.trade_template, "id": next(self._trade_ids), "orderId": order["orderId"],
                 "side": order["side"], "price": f"{price:.2f}", "qty": f"{qty:.3f}",
                 "quoteQty": f"{price * qty:.5f}", "commission": str(fee(price, qty, 0.0002 if maker else 0.0004)),
                 "time": self.now_ms,
                 "maker": maker, "buyer": order["side"] == "BUY"}  # fmt: skip
        self.trades.append(trade)
        return trade


def fee(price: float, qty: float, rate: float) -> float:
    """A commission as Binance writes it (8 decimals)."""
    return float(f"{price * qty * rate:.8f}")


class Wall:
    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += int(seconds * 1e9)


@pytest.fixture()
def keys(monkeypatch: pytest.MonkeyPatch) -> Credentials:
    monkeypatch.setenv("AUTOSCALP_BINANCEUSDM_API_KEY", API_KEY)
    monkeypatch.setenv("AUTOSCALP_BINANCEUSDM_API_SECRET", API_SECRET)
    return Credentials.from_env("binanceusdm")


def client(recorded: dict[str, Any], keys: Credentials, testnet: bool = False) -> ccxt.binanceusdm:
    exchange = ccxt.binanceusdm({"enableRateLimit": False, "apiKey": keys.api_key.get_secret_value(),
                                 "secret": keys.api_secret.get_secret_value()})  # fmt: skip
    if testnet:
        exchange.enable_demo_trading(True)
    # The snapshot's precision is in decimal places, an older ccxt's form: ccxt 4.5.90 parses the
    # recorded exchangeInfo records itself (tick sizes), as its load_markets would.
    infos = [copy.deepcopy(m["info"]) for m in recorded["markets"].values() if m.get("linear") and m.get("swap")]
    exchange.set_markets([exchange.parse_market(info) for info in infos])
    exchange.options = exchange.deep_extend(exchange.options, recorded["response"]["options"])
    exchange.session = FakeBinance(recorded)
    return exchange


def broker(recorded, keys, wall=None, testnet=False, **kwargs) -> tuple[LiveBroker, FakeBinance, Wall]:  # noqa: ANN001
    wall = wall or Wall()
    exchange = client(recorded, keys, testnet)
    config = ExchangeConfig(id="binanceusdm", testnet=testnet, max_retries=2, backoff_s=0.5)
    live = LiveBroker(config, keys, [SYMBOL], leverage=10, client=exchange, sleep=wall.sleep, wall_ns=wall, **kwargs)
    return live, exchange.session, wall


def record(*orders: Order, cancels: tuple[str, ...] = ()) -> DecisionRecord:
    return DecisionRecord(T0, SYMBOL, "tick", (), (), 0.5, float("nan"), True, "normal", "", 1.0, "active", "",
                          tuple(Cancel(c, SYMBOL) for c in cancels), orders, (), ())  # fmt: skip


def limit(cid: str, side: int = 1, price: float = 59_990.0, qty: float = 0.01, post_only: bool = True) -> Order:
    return Order(cid, SYMBOL, side, LIMIT, price, qty, post_only, False, "mm")


def stop(cid: str, side: int = -1, trigger: float = 59_500.0, qty: float = 0.01) -> Order:
    return Order(cid, SYMBOL, side, STOP, trigger, qty, False, True, "risk")


# ----------------------------------------------------------------------------- start


def test_start_sets_isolated_margin_and_leverage_signed_with_the_key(recorded, keys):
    live, fake, _ = broker(recorded, keys)
    margin, = fake.sent("POST", "/fapi/v1/marginType")
    leverage, = fake.sent("POST", "/fapi/v1/leverage")
    assert (margin.params["symbol"], margin.params["marginType"]) == ("BTCUSDT", "ISOLATED")
    assert (leverage.params["symbol"], leverage.params["leverage"]) == ("BTCUSDT", "10")
    assert fake.sent("GET", "/fapi/v1/positionSide/dual")  # one-way mode checked
    for request in fake.requests:
        assert request.host == "fapi.binance.com"
        assert request.headers["X-MBX-APIKEY"] == API_KEY and "signature" in request.params


def test_testnet_trades_on_binance_demo(recorded, keys):
    _, fake, _ = broker(recorded, keys, testnet=True)
    assert {r.host for r in fake.requests} == {"demo-fapi.binance.com"}


def test_margin_type_already_isolated_is_fine_and_hedge_mode_is_refused(recorded, keys):
    exchange = client(recorded, keys)
    fake = exchange.session
    fake.replies[("POST", "/fapi/v1/marginType")] = (400, {"code": -4046, "msg": "No need to change margin type."})
    LiveBroker(ExchangeConfig(), keys, [SYMBOL], 5, client=exchange)
    fake.replies[("GET", "/fapi/v1/positionSide/dual")] = (200, {"dualSidePosition": True})
    with pytest.raises(LiveBrokerError, match="hedge mode"):
        LiveBroker(ExchangeConfig(), keys, [SYMBOL], 5, client=exchange)


def test_missing_keys_name_the_environment_variables():
    with pytest.raises(LiveBrokerError) as info:
        LiveBroker(ExchangeConfig(), Credentials(), [SYMBOL])
    assert str(info.value) == missing_keys_message("binanceusdm")
    assert "AUTOSCALP_BINANCEUSDM_API_KEY" in str(info.value) and "AUTOSCALP_API_SECRET" in str(info.value)


# ----------------------------------------------------------------------------- orders


def test_post_only_limit_goes_as_gtx_with_our_client_id(recorded, keys):
    live, fake, _ = broker(recorded, keys)
    assert live.submit(record(limit("as1-1")), T0) == []
    sent, = fake.sent("POST", "/fapi/v1/order")
    assert sent.params.items() >= {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTX",
                                "newClientOrderId": "as1-1", "price": "59990", "quantity": "0.01"}.items()  # fmt: skip
    assert "reduceOnly" not in sent.params
    assert live.open_orders() == [limit("as1-1")]
    status = live.lookup("as1-1")
    assert (status.state, status.filled_qty, status.fills) == (WORKING, 0.0, ())
    assert live.lookup("as1-unknown") is None


def test_reduce_only_market_order_fills_at_once(recorded, keys):
    live, fake, _ = broker(recorded, keys)
    close = Order("as1-2", SYMBOL, -1, MARKET, 0.0, 0.009, False, True, "risk")
    events = live.submit(record(close), T0)
    sent, = fake.sent("POST", "/fapi/v1/order")
    assert sent.params.items() >= {"type": "MARKET", "side": "SELL", "reduceOnly": "true",
                                   "newClientOrderId": "as1-2"}.items()  # fmt: skip
    trade = fake.trades[-1]
    assert events == [Fill(SYMBOL, trade["time"] * MS, "as1-2", 60_000.0, 0.009, -1, fee(60_000.0, 0.009, 0.0004),
                           str(trade["id"]))]  # fmt: skip
    assert live.lookup("as1-2").state == FILLED
    assert live.poll(T0) == []  # the same trade, seen again by the poll, is not reported twice


def test_protective_stop_is_a_reduce_only_stop_market_at_the_exchange(recorded, keys):
    live, fake, _ = broker(recorded, keys)
    assert live.submit(record(stop("as1-3")), T0) == []
    sent, = fake.sent("POST", "/fapi/v1/algoOrder")  # Binance USD-M: conditional orders via the algo API
    assert sent.params.items() >= {"algoType": "CONDITIONAL", "type": "STOP_MARKET", "side": "SELL",
                                   "triggerPrice": "59500",
                           "reduceOnly": "true", "clientAlgoId": "as1-3", "quantity": "0.01"}.items()  # fmt: skip
    assert not fake.sent("POST", "/fapi/v1/order")
    assert live.open_orders(SYMBOL) == [stop("as1-3")]
    assert live.lookup("as1-3").state == WORKING

    assert live.submit(record(cancels=("as1-3",)), T0) == [OrderDone(SYMBOL, T0, "as1-3", CANCELLED)]
    cancel, = fake.sent("DELETE", "/fapi/v1/algoOrder")
    assert cancel.params["clientAlgoId"] == "as1-3"


def test_a_triggered_stop_fills_under_its_own_client_id(recorded, keys):
    live, fake, wall = broker(recorded, keys)
    live.submit(record(stop("as1-4")), T0)
    live.poll(T0)
    trade = fake.trigger("as1-4", 59_480.0)
    wall.now += 2 * 10**9
    events = live.poll(T0 + 1)
    assert [(type(e).__name__, e.client_id) for e in events] == [("Fill", "as1-4")]
    assert events[0].fill_id == str(trade["id"]) and events[0].side == -1 and events[0].price == 59_480.0
    status = live.lookup("as1-4")
    assert (status.state, status.filled_qty, [f.fill_id for f in status.fills]) == (FILLED, 0.01, [str(trade["id"])])


def test_cancel_by_client_id_and_cancel_of_a_filled_order(recorded, keys):
    live, fake, _ = broker(recorded, keys)
    live.submit(record(limit("as1-5"), limit("as1-6", side=-1, price=60_010.0)), T0)
    assert live.submit(record(cancels=("as1-5",)), T0) == [OrderDone(SYMBOL, T0, "as1-5", CANCELLED)]
    cancel, = fake.sent("DELETE", "/fapi/v1/order")
    assert cancel.params["origClientOrderId"] == "as1-5" and "orderId" not in cancel.params
    fake.fill("as1-6", 60_010.0, 0.01)
    assert live.submit(record(cancels=("as1-6",)), T0) == [Fill(SYMBOL, fake.trades[-1]["time"] * MS, "as1-6",
                                                                60_010.0, 0.01, -1, fee(60_010.0, 0.01, 0.0002),
                                                                str(fake.trades[-1]["id"]))]  # fmt: skip


def test_poll_brings_fills_then_the_exchanges_own_cancel(recorded, keys):
    live, fake, wall = broker(recorded, keys)
    live.submit(record(limit("as1-7", qty=0.02)), T0)
    assert live.poll(T0) == []
    fake.fill("as1-7", 59_990.0, 0.005)
    assert live.poll(T0) == []  # within poll_interval_s: no request
    wall.now += 10**9
    first, = live.poll(T0 + 1)
    assert (first.client_id, first.qty, first.fee_usdt) == ("as1-7", 0.005, pytest.approx(59_990.0 * 0.005 * 0.0002))
    fake.fill("as1-7", 59_990.0, 0.005)
    fake.end("as1-7", "EXPIRED")  # e.g. the exchange's self-trade prevention
    wall.now += 10**9
    events = live.poll(T0 + 2)
    assert [type(e).__name__ for e in events] == ["Fill", "OrderDone"]
    assert events[1] == OrderDone(SYMBOL, T0 + 2, "as1-7", EXPIRED)
    assert live.lookup("as1-7").filled_qty == 0.01


def test_post_only_that_would_cross_is_rejected(recorded, keys):
    live, fake, _ = broker(recorded, keys)
    fake.replies[("POST", "/fapi/v1/order")] = (400, {"code": -5022, "msg": "Due to the order could not be executed "
                                                      "as maker, the Post Only order will be rejected."})  # fmt: skip
    assert live.submit(record(limit("as1-8")), T0) == [OrderDone(SYMBOL, T0, "as1-8", REJECTED)]


def test_a_client_id_is_never_sent_twice(recorded, keys):
    live, fake, _ = broker(recorded, keys)
    live.submit(record(limit("as1-9")), T0)
    with pytest.raises(LiveBrokerError, match="already sent"):
        live.submit(record(limit("as1-9")), T0)
    assert len(fake.sent("POST", "/fapi/v1/order")) == 1


# ----------------------------------------------------------------------------- timeouts: never twice


def test_timeout_after_the_exchange_got_the_order_adopts_it(recorded, keys, caplog):
    caplog.set_level(logging.DEBUG)
    live, fake, _ = broker(recorded, keys)
    fake.fail("POST", "/fapi/v1/order", reached=True)  # the order is in; the reply is lost
    assert live.submit(record(limit("as2-1")), T0) == []
    assert len(fake.sent("POST", "/fapi/v1/order")) == 1 and list(fake.orders) == ["as2-1"]
    lookup, = fake.sent("GET", "/fapi/v1/order")
    assert lookup.params["origClientOrderId"] == "as2-1"
    assert live.lookup("as2-1").state == WORKING
    assert any("never sent twice" in r.getMessage() for r in caplog.records)
    assert_no_secret(*(r.getMessage() for r in caplog.records))


def test_timeout_before_the_exchange_got_it_expires_unsent(recorded, keys):
    live, fake, wall = broker(recorded, keys)
    fake.fail("POST", "/fapi/v1/order", reached=False)
    assert live.submit(record(limit("as2-2")), T0) == []
    assert live.open_orders() == [limit("as2-2")]  # in flight as far as anyone can tell
    wall.now += 2 * 10**9
    assert live.poll(T0 + 1) == []  # not there yet, may still arrive
    wall.now += 30 * 10**9  # past recvWindow + timeout: the exchange can no longer accept it
    assert live.poll(T0 + 2) == [OrderDone(SYMBOL, T0 + 2, "as2-2", EXPIRED)]
    assert len(fake.sent("POST", "/fapi/v1/order")) == 1 and fake.orders == {}
    assert live.lookup("as2-2") is None


def test_an_order_that_arrives_after_its_timeout_is_adopted_at_the_next_poll(recorded, keys):
    live, fake, wall = broker(recorded, keys)
    fake.hold = True
    fake.fail("POST", "/fapi/v1/order", reached=False)
    assert live.submit(record(limit("as2-3")), T0) == []  # the lookup right after the timeout finds nothing
    fake.deliver_held()  # ... then the request arrives
    wall.now += 2 * 10**9
    assert live.poll(T0 + 1) == []
    assert live.lookup("as2-3").state == WORKING
    assert len(fake.sent("POST", "/fapi/v1/order")) == 1 and list(fake.orders) == ["as2-3"]
    assert live.open_orders() == [limit("as2-3")]


def test_a_cancel_of_an_order_in_flight_cancels_it_when_it_arrives(recorded, keys):
    live, fake, wall = broker(recorded, keys)
    fake.hold = True
    fake.fail("POST", "/fapi/v1/order", reached=False)
    live.submit(record(limit("as2-5")), T0)
    assert live.submit(record(cancels=("as2-5",)), T0) == []  # unknown to the exchange: not confirmed
    fake.deliver_held()
    wall.now += 2 * 10**9
    assert live.poll(T0 + 1) == [OrderDone(SYMBOL, T0 + 1, "as2-5", CANCELLED)]
    assert fake.orders["as2-5"]["status"] == "CANCELED" and len(fake.sent("POST", "/fapi/v1/order")) == 1


def test_poll_rides_out_an_unreachable_exchange(recorded, keys, caplog):
    live, fake, wall = broker(recorded, keys)
    live.submit(record(limit("as2-6")), T0)
    fake.fill("as2-6", 59_990.0, 0.004)
    for _ in range(3):  # max_retries 2: three attempts
        fake.fail("GET", "/fapi/v1/openOrders", reached=True)
    assert live.poll(T0) == []
    assert any("polled again" in r.getMessage() for r in caplog.records)
    wall.now += 10**9
    fill, = live.poll(T0 + 1)
    assert (fill.client_id, fill.qty) == ("as2-6", 0.004)


def test_a_failing_lookup_is_retried_with_backoff(recorded, keys):
    live, fake, wall = broker(recorded, keys)
    fake.fail("POST", "/fapi/v1/order", reached=True)
    fake.fail("GET", "/fapi/v1/order", reached=True)
    assert live.submit(record(limit("as2-4")), T0) == []
    assert wall.sleeps == [0.5] and len(fake.sent("GET", "/fapi/v1/order")) == 2
    assert len(fake.sent("POST", "/fapi/v1/order")) == 1


# ----------------------------------------------------------------------------- the account


def test_positions_wallet_and_fills_since_from_recorded_bodies(recorded, keys):
    recorded_trade = recorded_body(recorded, "fetchMyTrades", "Swap private trade")[0]
    wall = Wall()
    wall.now = (int(recorded_trade["time"]) + 3_600_000) * MS  # an hour after the recorded fill
    live, fake, _ = broker(recorded, keys, wall)
    assert live.positions() == {SYMBOL: HeldPosition(0.009, 67_445.9)}
    assert live.wallet_usdt() == 31.022612
    fake.trades.append(recorded_trade)  # a fill of an order this process never sent: its client id is asked for
    fake.orders["x-xcKtGhcu-old"] = {**fake.order_template, "orderId": recorded_trade["orderId"],
                                     "clientOrderId": "as0-17", "status": "FILLED"}  # fmt: skip
    fills = live.fills_since(0)
    assert fills == [Fill(SYMBOL, int(recorded_trade["time"]) * MS, "as0-17", 36_567.1, 0.01, 1, 0.1462684,
                          str(recorded_trade["id"]))]  # fmt: skip
    since, = fake.sent("GET", "/fapi/v1/userTrades")
    assert int(since.params["startTime"]) > 0  # Binance's 7-day window, not from 1970


# ----------------------------------------------------------------------------- secrets


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text and API_SECRET not in text, text
        assert not SIGNATURE.search(text), text


def test_errors_and_logs_never_carry_keys_or_signatures(recorded, keys, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)  # ccxt logs every request, headers included, at DEBUG
    # An earlier test in the same process may have configured logging (Prefect's dictConfig disables
    # existing loggers): make sure ccxt's and ours reach caplog, or the check below proves nothing.
    for name in [n for n in logging.root.manager.loggerDict if n.startswith(("ccxt", "serving"))]:
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "disabled", False)
        monkeypatch.setattr(logger, "propagate", True)
        monkeypatch.setattr(logger, "level", logging.NOTSET)  # e.g. `serve` sets "serving" to INFO
    logging.root.manager._clear_cache()  # loggers cache their effective level
    live, fake, _ = broker(recorded, keys)
    # a GET whose URL carries the signature, failing for good
    for _ in range(3):
        fake.fail("GET", "/fapi/v3/positionRisk", reached=True)
    with pytest.raises(LiveBrokerError) as timeout:
        live.positions()
    # an exchange error whose text ccxt builds from the URL and the body
    fake.replies[("GET", "/fapi/v3/account")] = (401, {"code": -2015, "msg": "Invalid API-key, IP, or "
                                                       f"permissions for action. {API_KEY}"})  # fmt: skip
    with pytest.raises(LiveBrokerError) as auth:
        live.wallet_usdt()
    texts = [str(timeout.value), str(auth.value)]
    assert "\n" not in "".join(texts)
    assert "retries" in texts[0] and "code -2015" in texts[1]
    assert timeout.value.__suppress_context__ and auth.value.__suppress_context__
    assert_no_secret(*texts)
    assert caplog.records and any("X-MBX-APIKEY" in r.getMessage() for r in caplog.records)  # ccxt's debug lines
    assert_no_secret(*(r.getMessage() for r in caplog.records))


# ----------------------------------------------------------------------------- the daemon's wiring


def product_config(**serve: Any):  # noqa: ANN201
    from flows.config import ProductConfig

    config = ProductConfig()
    return config, config.serve.model_copy(update={"broker": "live", **serve})


def test_serve_live_needs_confirmation_and_keys(monkeypatch, tmp_path):
    from serving.daemon.build import ServeError, build_broker, market_limits

    for name in ("AUTOSCALP_BINANCEUSDM_API_KEY", "AUTOSCALP_BINANCEUSDM_API_SECRET", "AUTOSCALP_API_KEY",
                 "AUTOSCALP_API_SECRET"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    config, serve = product_config(live_confirmed=False)
    limits = market_limits(SYMBOL, config.backtest, config.venue)
    with pytest.raises(ServeError, match="live_confirmed"):
        build_broker(config, serve, SYMBOL, limits, tmp_path)
    serve = serve.model_copy(update={"live_confirmed": True})
    with pytest.raises(ServeError) as missing:
        build_broker(config, serve, SYMBOL, limits, tmp_path)
    assert str(missing.value) == missing_keys_message("binanceusdm") and "\n" not in str(missing.value)


def test_serve_live_builds_the_live_broker_with_the_engines_leverage(recorded, keys, monkeypatch, tmp_path):
    from serving.brokers import live as live_module
    from serving.daemon.build import build_broker, exchange_leverage, market_limits

    exchange = client(recorded, keys)
    built: list[tuple] = []
    monkeypatch.setattr(live_module, "trading_client", lambda *args: built.append(args) or exchange)
    config, serve = product_config(live_confirmed=True)
    limits = market_limits(SYMBOL, config.backtest, config.venue)
    live = build_broker(config, serve, SYMBOL, limits, tmp_path)
    assert isinstance(live, LiveBroker) and built[0][0] == config.exchange and built[0][1] == keys
    expected = exchange_leverage(config.engine.leverage, limits)
    assert expected == min(10, int(limits.max_leverage))  # the default caps: 10 x, the exchange's max
    leverage, = exchange.session.sent("POST", "/fapi/v1/leverage")
    assert leverage.params["leverage"] == str(expected)
    assert not (tmp_path / "journal").exists()  # no paper account opened
