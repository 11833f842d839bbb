"""ExchangeSource through ccxt's real code paths, fed recorded exchange data (no network).

REST: real ``ccxt.binance`` / ``ccxt.binanceusdm`` objects with markets from ccxt's recorded
snapshot; only their HTTP session is replaced (``requests.Session.request`` answers with the
recorded ``httpResponse`` bodies), so ccxt's request building, error mapping and parsers run.

Stream: a real ``ccxt.pro.binanceusdm``; only the websocket transport under ccxt's ``Client`` is
replaced by a fake Binance server that answers SUBSCRIBE and sends the raw messages recorded from
Binance (usdm_btcusdt_20240808.gz), so ccxt's client, ``handle_message``, trade parser and order
book synchronisation run on real data.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import logging
import subprocess
import sys
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ccxt
import ccxt.pro
import pytest
import requests
from aiohttp import WSMessage, WSMsgType

from pipeline.config import Credentials, ExchangeConfig, ExchangeSourceConfig
from pipeline.data.schemas import EXEC_TYPE, SCHEMAS, Kind
from pipeline.data.sources.base import TickBatch
from pipeline.data.sources.exchange import ExchangeSource
from pipeline.data.sources.exchange.convert import RowBuffer, bidask_row, trade_row
from pipeline.data.sources.exchange.retry import Redactor, Retrier
from pipeline.errors import SourceError

MS = 1_000_000
API_KEY = "AKTEST-key-5f3c9e1d77"
API_SECRET = "SECRET-never-print-8a7b6c5d"
T0 = 1_723_161_000 * 10**9

# ccxt's documented /fapi/v1/premiumIndex response (the example in binance.parse_funding_rate):
# the recordings have no fetchFundingRate call.
PREMIUM_INDEX = {
    "symbol": "BTCUSDT",
    "markPrice": "45802.81129892",
    "indexPrice": "45745.47701915",
    "estimatedSettlePrice": "45133.91753671",
    "lastFundingRate": "0.00063521",
    "interestRate": "0.00010000",
    "nextFundingTime": "1621267200000",
    "time": "1621252344001",
}


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def recorded(shared_data: Path) -> dict[str, Any]:
    folder = shared_data / "ccxt_recorded"
    if not (folder / "response_binance.json").is_file():
        pytest.skip(f"{folder} has no ccxt recordings")
    response = json.loads((folder / "response_binance.json").read_text())
    markets = json.loads((folder / "markets_binance.json").read_text())
    return {"response": response, "markets": markets}


def call(recorded: dict[str, Any], method: str, description: str) -> dict[str, Any]:
    return next(c for c in recorded["response"]["methods"][method] if c["description"] == description)


class FakeTime:
    """clock_ns + sleep: time moves only when the source sleeps."""

    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def clock(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += int(seconds * 1e9)


class Replies:
    """Answers in turn; the last one repeats."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, url: str) -> Any:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


class RecordedHTTP(requests.Session):
    """ccxt's sync HTTP layer answering by URL path: a body, (status, body), or an exception."""

    def __init__(self, routes: dict[str, Any]) -> None:
        super().__init__()
        self.routes = routes
        self.urls: list[str] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.urls.append(url)
        answer = self.routes.get(urlsplit(url).path, (404, {"code": -1, "msg": "no recording"}))
        if callable(answer):
            answer = answer(url)
        if isinstance(answer, BaseException):
            raise answer
        status, body = answer if isinstance(answer, tuple) else (200, answer)
        response = requests.Response()
        response.status_code = status
        response.reason = "OK" if status == 200 else "Error"
        response.url = url
        response.encoding = "utf-8"
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps(body).encode()
        return response


def rest_client(cls: type, recorded: dict[str, Any], routes: dict[str, Any], **settings: Any) -> Any:
    client = cls({"enableRateLimit": False, **settings})
    client.set_markets(copy.deepcopy(recorded["markets"]))
    client.options = client.deep_extend(client.options, recorded["response"]["options"])
    client.session = RecordedHTTP(routes)
    return client


def exchange_config(exchange_id: str, **overrides: Any) -> ExchangeConfig:
    return ExchangeConfig(id=exchange_id, **{"max_retries": 5, "backoff_s": 1.0, "backoff_max_s": 30.0, **overrides})


def run(source: ExchangeSource) -> dict[tuple[str, Kind], TickBatch]:
    return {(b.symbol, b.kind): b for b in source.batches()}


def credentials(monkeypatch: pytest.MonkeyPatch, exchange_id: str) -> Credentials:
    monkeypatch.setenv(f"AUTOSCALP_{exchange_id.upper()}_API_KEY", API_KEY)
    monkeypatch.setenv(f"AUTOSCALP_{exchange_id.upper()}_API_SECRET", API_SECRET)
    return Credentials.from_env(exchange_id)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text and API_SECRET not in text, text


# ----------------------------------------------------------------------------- REST


@pytest.mark.realdata
def test_replay_harness_reproduces_recorded_parsed_responses(recorded: dict[str, Any]) -> None:
    """ccxt 4.5.90 builds the recorded requests and parses the bodies to the recorded results."""
    trades = call(recorded, "fetchTrades", "public spot trades")
    spot = rest_client(ccxt.binance, recorded, {"/api/v3/aggTrades": trades["httpResponse"]})
    assert spot.fetch_trades(*trades["input"]) == trades["parsedResponse"]
    assert urlsplit(spot.session.urls[0]).path == "/api/v3/aggTrades"
    book = call(recorded, "fetchOrderBook", "swap orderbook")
    swap = rest_client(ccxt.binanceusdm, recorded, {"/fapi/v1/depth": book["httpResponse"]})
    assert swap.fetch_order_book(*book["input"]) == book["parsedResponse"]


@pytest.mark.realdata
def test_rest_spot_trades_and_book_match_recorded(recorded: dict[str, Any]) -> None:
    trades = call(recorded, "fetchTrades", "public spot trades")
    book = call(recorded, "fetchOrderBook", "spot orderbook")
    client = rest_client(
        ccxt.binance,
        recorded,
        # the only recorded Binance trades body is aggTrades-shaped; ccxt's parse_trade reads both
        {"/api/v3/trades": trades["httpResponse"], "/api/v3/depth": book["httpResponse"]},
    )
    clock = FakeTime()
    source = ExchangeSource(
        exchange_config("binance"),
        ExchangeSourceConfig(mode="rest", duration_s=1, poll_interval_s=1, order_book_depth=2),
        ("BTC/USDT",),
        client=client,
        clock_ns=clock.clock,
        sleep=clock.sleep,
    )
    batches = run(source)
    assert set(batches) == {("BTC/USDT", Kind.TRADES), ("BTC/USDT", Kind.QUOTES), ("BTC/USDT", Kind.DEPTH)}
    assert all(b.exchange == "binance" for b in batches.values())

    # real trade ids (the websocket @trade ids), not aggregate ids: the recent-trades endpoint
    trade_url = next(u for u in client.session.urls if "/trades" in u)
    assert urlsplit(trade_url).path == "/api/v3/trades"
    assert parse_qs(urlsplit(trade_url).query) == {"symbol": ["BTCUSDT"], "limit": ["1000"]}

    expected = trades["parsedResponse"][0]
    rows = batches[("BTC/USDT", Kind.TRADES)].rows
    assert rows.schema == SCHEMAS[Kind.TRADES]  # spot trades carry no execution type
    assert rows.to_pylist() == [
        {
            "ts_ns": expected["timestamp"] * MS,
            "recv_ns": T0,
            "trade_id": int(expected["id"]),
            "price": expected["price"],
            "qty": expected["amount"],
            "side": 1 if expected["side"] == "buy" else -1,
        }
    ]

    parsed = book["parsedResponse"]
    assert parsed["timestamp"] is None  # Binance spot depth has no time: recv time stands in
    assert batches[("BTC/USDT", Kind.QUOTES)].rows.to_pylist() == [
        {
            "ts_ns": T0,
            "recv_ns": T0,
            "update_id": parsed["nonce"],
            "bid_px": parsed["bids"][0][0],
            "bid_qty": parsed["bids"][0][1],
            "ask_px": parsed["asks"][0][0],
            "ask_qty": parsed["asks"][0][1],
        }
    ]
    depth = batches[("BTC/USDT", Kind.DEPTH)].rows.to_pylist()
    assert [(r["side"], r["price"], r["qty"]) for r in depth] == [(1, p, q) for p, q in parsed["bids"]] + [
        (-1, p, q) for p, q in parsed["asks"]
    ]
    assert {(r["update_id"], r["is_snapshot"], r["first_update_id"]) for r in depth} == {
        (parsed["nonce"], True, None)
    }


@pytest.mark.realdata
def test_rest_swap_book_and_funding_match_recorded(recorded: dict[str, Any]) -> None:
    book = call(recorded, "fetchOrderBook", "swap orderbook")
    client = rest_client(
        ccxt.binanceusdm,
        recorded,
        {"/fapi/v1/trades": [], "/fapi/v1/depth": book["httpResponse"], "/fapi/v1/premiumIndex": PREMIUM_INDEX},
    )
    clock = FakeTime()
    source = ExchangeSource(
        exchange_config("binanceusdm"),
        ExchangeSourceConfig(mode="rest", duration_s=1, poll_interval_s=1, order_book_depth=5),
        ("BTC/USDT:USDT",),
        client=client,
        clock_ns=clock.clock,
        sleep=clock.sleep,
    )
    batches = run(source)
    assert set(batches) == {("BTC/USDT:USDT", k) for k in (Kind.QUOTES, Kind.DEPTH, Kind.FUNDING)}
    depth_url = next(u for u in client.session.urls if "/depth" in u)
    assert parse_qs(urlsplit(depth_url).query) == {"symbol": ["BTCUSDT"], "limit": ["5"]}

    parsed = book["parsedResponse"]
    quote = batches[("BTC/USDT:USDT", Kind.QUOTES)].rows.to_pylist()
    assert quote == [
        {
            "ts_ns": parsed["timestamp"] * MS,  # the transaction time T
            "recv_ns": T0,
            "update_id": parsed["nonce"],
            "bid_px": 42651.1,
            "bid_qty": 470.672,
            "ask_px": 42878.0,
            "ask_qty": 7.011,
        }
    ]
    assert quote[0]["bid_px"] == parsed["bids"][0][0] and quote[0]["ask_qty"] == parsed["asks"][0][1]
    depth = batches[("BTC/USDT:USDT", Kind.DEPTH)].rows
    assert depth.num_rows == 10
    assert depth.column("price").to_pylist() == [p for p, _ in parsed["bids"]] + [p for p, _ in parsed["asks"]]
    assert depth.column("qty").to_pylist() == [q for _, q in parsed["bids"]] + [q for _, q in parsed["asks"]]
    assert depth.column("side").to_pylist() == [1] * 5 + [-1] * 5
    assert set(depth.column("update_id").to_pylist()) == {35263532345}
    assert set(depth.column("ts_ns").to_pylist()) == {1706803917258 * MS}

    assert batches[("BTC/USDT:USDT", Kind.FUNDING)].rows.to_pylist() == [
        {
            "ts_ns": 1621252344001 * MS,
            "recv_ns": T0,
            "mark_px": 45802.81129892,
            "index_px": 45745.47701915,
            "funding_rate": 0.00063521,
            "next_funding_ns": 1621267200000 * MS,
        }
    ]


@pytest.mark.realdata
def test_rest_polls_on_schedule_and_dedupes_trades(recorded: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    trades = call(recorded, "fetchTrades", "public spot trades")["httpResponse"]
    later = [dict(trades[0], a=str(int(trades[0]["a"]) + 3), T=str(int(trades[0]["T"]) + 5))]
    book = call(recorded, "fetchOrderBook", "spot orderbook")["httpResponse"]
    trades_route = Replies(trades, trades, trades + later)  # overlapping polls, then a gap of 2 ids
    client = rest_client(ccxt.binance, recorded, {"/api/v3/trades": trades_route, "/api/v3/depth": book})
    clock = FakeTime()
    source = ExchangeSource(
        exchange_config("binance"),
        ExchangeSourceConfig(mode="rest", duration_s=3, poll_interval_s=1, order_book_depth=2),
        ("BTC/USDT",),
        client=client,
        clock_ns=clock.clock,
        sleep=clock.sleep,
    )
    with caplog.at_level(logging.WARNING):
        batches = run(source)
    assert trades_route.calls == 3
    assert clock.sleeps == [1.0, 1.0]
    rows = batches[("BTC/USDT", Kind.TRADES)].rows.to_pylist()
    assert [r["trade_id"] for r in rows] == [int(trades[0]["a"]), int(trades[0]["a"]) + 3]
    assert [r["recv_ns"] for r in rows] == [T0, T0 + 2 * 10**9]
    assert batches[("BTC/USDT", Kind.QUOTES)].rows.column("recv_ns").to_pylist() == [T0, T0 + 10**9, T0 + 2 * 10**9]
    assert "2 trades missed between polls" in caplog.text


@pytest.mark.realdata
def test_rest_retries_network_errors_with_backoff(recorded: dict[str, Any]) -> None:
    trades = call(recorded, "fetchTrades", "public spot trades")["httpResponse"]
    book = call(recorded, "fetchOrderBook", "spot orderbook")["httpResponse"]
    flaky = Replies(
        requests.ConnectionError("connection reset by peer"),  # ccxt maps it to NetworkError
        (429, {"code": -1003, "msg": "Too many requests; current limit is 1200 request weight per 1 MINUTE."}),
        trades,
    )
    client = rest_client(ccxt.binance, recorded, {"/api/v3/trades": flaky, "/api/v3/depth": book})
    clock = FakeTime()
    source = ExchangeSource(
        exchange_config("binance"),
        ExchangeSourceConfig(mode="rest", duration_s=1, poll_interval_s=1),
        ("BTC/USDT",),
        client=client,
        clock_ns=clock.clock,
        sleep=clock.sleep,
    )
    batches = run(source)
    assert flaky.calls == 3
    assert clock.sleeps == [1.0, 2.0]
    assert batches[("BTC/USDT", Kind.TRADES)].rows.num_rows == 1
    # recv_ns is taken after the successful call, 3 s of backoff later
    assert batches[("BTC/USDT", Kind.TRADES)].rows.column("recv_ns").to_pylist() == [T0 + 3 * 10**9]


@pytest.mark.realdata
def test_rest_gives_up_after_max_retries(
    recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    creds = credentials(monkeypatch, "binance")
    down = Replies(requests.ConnectionError(f"Max retries exceeded with url: /api/v3/trades?apiKey={API_KEY}"))
    client = rest_client(ccxt.binance, recorded, {"/api/v3/trades": down})
    clock = FakeTime()
    source = ExchangeSource(
        exchange_config("binance", max_retries=3, backoff_max_s=3.0),
        ExchangeSourceConfig(mode="rest", duration_s=10, poll_interval_s=1),
        ("BTC/USDT",),
        credentials=creds,
        client=client,
        clock_ns=clock.clock,
        sleep=clock.sleep,
    )
    with caplog.at_level(logging.WARNING), pytest.raises(SourceError) as caught:
        run(source)
    assert [r.getMessage().split("; ")[-1] for r in caplog.records] == [f"retry {i}/3 in {i} s" for i in (1, 2, 3)]
    assert_no_secret(caplog.text, str(caught.value), "".join(traceback.format_exception(caught.value)))
    assert down.calls == 4
    assert clock.sleeps == [1.0, 2.0, 3.0]  # doubling, capped at backoff_max_s
    message = str(caught.value)
    assert message.startswith("binance fetch_trades(BTC/USDT) failed after 3 retries: NetworkError")
    assert "?" not in message and "\n" not in message  # no query strings, one line


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            401,
            {"code": -2015, "msg": f"Invalid API-key, IP, or permissions for action. key={API_KEY}"},
            "AuthenticationError",
        ),
        (400, {"code": -1121, "msg": "Invalid symbol."}, "BadSymbol"),
        (
            400,
            {"code": -1100, "msg": f"Illegal characters found in parameter 'signature'; secret={API_SECRET}"},
            "BadRequest",
        ),
    ],
)
def test_rest_fails_at_once_on_non_transient_errors(
    recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch, status: int, body: dict, error: str
) -> None:
    creds = credentials(monkeypatch, "binance")
    client = rest_client(
        ccxt.binance,
        recorded,
        {"/api/v3/trades": (status, body)},
        apiKey=creds.api_key.get_secret_value(),  # type: ignore[union-attr]
        secret=creds.api_secret.get_secret_value(),  # type: ignore[union-attr]
    )
    clock = FakeTime()
    source = ExchangeSource(
        exchange_config("binance"),
        ExchangeSourceConfig(mode="rest", duration_s=10, poll_interval_s=1),
        ("BTC/USDT",),
        credentials=creds,
        client=client,
        clock_ns=clock.clock,
        sleep=clock.sleep,
    )
    with pytest.raises(SourceError) as caught:
        run(source)
    assert clock.sleeps == [] and len(client.session.urls) == 1
    message = str(caught.value)
    assert message.startswith(f"binance fetch_trades(BTC/USDT) failed: {error}: code {body['code']}")
    assert_no_secret(message, "".join(traceback.format_exception(caught.value)), source.description, repr(source))


@pytest.mark.realdata
def test_unknown_symbol_fails_before_any_request(recorded: dict[str, Any]) -> None:
    client = rest_client(ccxt.binanceusdm, recorded, {})
    source = ExchangeSource(
        exchange_config("binanceusdm"), ExchangeSourceConfig(), ("NOPE/USDT:USDT",), client=client
    )
    with pytest.raises(SourceError, match=r"^binanceusdm market\(NOPE/USDT:USDT\) failed: BadSymbol"):
        run(source)
    assert client.session.urls == []


def test_redactor_removes_credentials_signatures_and_queries() -> None:
    retrier = Retrier(exchange_config("binanceusdm"), Redactor([API_KEY, API_SECRET, None]))
    exc = ccxt.NetworkError(
        f"binanceusdm GET https://fapi.binance.com/fapi/v2/account?timestamp=1&recvWindow=5000&signature=ab12cd "
        f"headers X-MBX-APIKEY: {API_KEY} secret={API_SECRET}\n more"
    )
    reason = retrier.reason(exc)
    assert reason.startswith("NetworkError: GET https://fapi.binance.com/fapi/v2/account headers X-MBX-APIKEY: ***")
    assert_no_secret(reason)
    assert "ab12cd" not in reason and "timestamp=" not in reason and "\n" not in reason


def test_description_and_default_clients_keep_credentials_out(monkeypatch: pytest.MonkeyPatch) -> None:
    creds = credentials(monkeypatch, "binanceusdm")
    rest = ExchangeSource(
        exchange_config("binanceusdm", timeout_ms=1234), ExchangeSourceConfig(), ("BTC/USDT:USDT",), credentials=creds
    )
    assert rest.description == "exchange:binanceusdm:rest:BTC/USDT:USDT"
    assert_no_secret(rest.description, repr(rest))
    client = rest.build_client()  # built offline: nothing is fetched until batches()
    assert isinstance(client, ccxt.binanceusdm)
    assert (client.enableRateLimit, client.timeout) == (True, 1234)
    assert (client.apiKey, client.secret) == (API_KEY, API_SECRET)
    assert client.options["fetchCurrencies"] is False  # no signed wallet call to load markets

    testnet = ExchangeSource(
        exchange_config("binanceusdm", testnet=True), ExchangeSourceConfig(mode="stream"), ("BTC/USDT:USDT",)
    )
    assert testnet.description == "exchange:binanceusdm-testnet:stream:BTC/USDT:USDT"
    pro = testnet.build_client()
    assert isinstance(pro, ccxt.pro.binanceusdm) and not pro.apiKey and not pro.secret
    assert "testnet" in pro.urls["api"]["fapiPublic"]

    with pytest.raises(SourceError, match="not supported"):
        ExchangeSource(exchange_config("nosuchexchange"), ExchangeSourceConfig(), ("BTC/USDT",)).build_client()


def test_stream_client_builds_without_the_caller_importing_ccxt_pro() -> None:
    code = (
        "from pipeline.config import ExchangeConfig, ExchangeSourceConfig\n"
        "from pipeline.data.sources.exchange import ExchangeSource\n"
        "source = ExchangeSource(ExchangeConfig(), ExchangeSourceConfig(mode='stream'), ('BTC/USDT:USDT',))\n"
        "print(type(source.build_client()).__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ccxt.pro.binanceusdm"


# ----------------------------------------------------------------------------- websocket

WS_LINES = 3000  # 469 trades, ~2300 bookTicker, ~200 depth diffs and the REST snapshot


@pytest.fixture(scope="module")
def usdm_messages(shared_data: Path) -> list[dict[str, Any]]:
    path = shared_data / "binance_ws_raw" / "usdm_btcusdt_20240808.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    messages = []
    with gzip.open(path, "rt") as lines:
        for _, line in zip(range(WS_LINES), lines):
            messages.append(json.loads(line.split(" ", 1)[1]))
    return messages


def stream_base(name: str) -> str:
    """``btcusdt@depth@100ms`` -> ``btcusdt@depth`` (ccxt asks 100 ms, the recording has 0 ms)."""
    parts = name.split("@")
    return "@".join(parts[:2])


class FakeBinanceServer:
    """Binance's websocket side: answers SUBSCRIBE, then sends the recorded messages of the
    subscribed streams, bare (as on the /ws endpoints ccxt connects to). One queue per stream is
    shared by all connections, so a reconnect resumes where the dropped connection stopped.

    ``paced``: the next message goes out only while ccxt has a pending future (someone waits), so
    every update reaches the consumer; otherwise messages are sent as fast as they are read.
    ``drops``: stream -> message counts after which that stream's connection errors out once.
    """

    def __init__(
        self, messages: list[dict[str, Any]], paced: bool = True, drops: dict[str, list[int]] | None = None
    ) -> None:
        self.queues: dict[str, deque] = {}
        self.sent: dict[str, int] = {}
        self.snapshot: dict[str, Any] | None = None
        for message in messages:
            if "stream" in message:
                self.queues.setdefault(stream_base(message["stream"]), deque()).append(message["data"])
            elif self.snapshot is None and "lastUpdateId" in message:
                self.snapshot = message
        self.paced = paced
        self.drops = {k: list(v) for k, v in (drops or {}).items()}
        self.subscribed: list[list[str]] = []
        self.rest_urls: list[str] = []
        self.connections: list[FakeWebSocket] = []
        self.done_at: float | None = None

    def install(self, client: Any) -> None:
        make_client = client.client

        def patched(url: str) -> Any:
            ws_client = make_client(url)
            if not getattr(ws_client, "_fake_transport", False):
                ws_client._fake_transport = True

                async def create_connection(session: Any, ws_client: Any = ws_client) -> FakeWebSocket:
                    connection = FakeWebSocket(self, ws_client)
                    self.connections.append(connection)
                    return connection

                ws_client.create_connection = create_connection
            return ws_client

        async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
            self.rest_urls.append(url)
            path = urlsplit(url).path
            if path == "/fapi/v1/depth":
                return copy.deepcopy(self.snapshot)
            if path == "/fapi/v1/premiumIndex":
                return dict(PREMIUM_INDEX)
            raise ccxt.BadRequest(f"no recording for {path}")

        client.client = patched
        client.fetch = fetch

    def next_message(self, streams: list[str]) -> tuple[str, dict[str, Any]] | None:
        for stream in streams:
            queue = self.queues.get(stream)
            if queue:
                return stream, queue[0]
        return None

    def pop(self, stream: str) -> None:
        self.queues[stream].popleft()
        self.sent[stream] = self.sent.get(stream, 0) + 1
        subscribed = {stream_base(p) for params in self.subscribed for p in params}
        if self.done_at is None and not any(self.queues.get(s) for s in subscribed):
            self.done_at = time.monotonic()

    def clock(self) -> int:
        """Real time until every message was sent (plus a moment to handle it), then far ahead."""
        if self.done_at is not None and time.monotonic() - self.done_at > 0.5:
            return time.time_ns() + 10**15
        return time.time_ns()


class FakeWebSocket:
    """The bits of aiohttp's ClientWebSocketResponse that ccxt's Client uses."""

    _conn = None  # ccxt peeks at aiohttp's buffer through it

    def __init__(self, server: FakeBinanceServer, ws_client: Any) -> None:
        self.server = server
        self.ws_client = ws_client
        self.closed = False
        self.streams: list[str] = []
        self.outbox: deque = deque()

    async def send_str(self, text: str) -> None:
        request = json.loads(text)
        if request.get("method") == "SUBSCRIBE":
            self.server.subscribed.append(request["params"])
            self.streams += [stream_base(p) for p in request["params"]]
            self.outbox.append({"result": None, "id": request["id"]})

    async def receive(self) -> WSMessage:
        while not self.closed:
            if self.outbox:
                return WSMessage(WSMsgType.TEXT, json.dumps(self.outbox.popleft()), None)
            pending = self.server.next_message(self.streams)
            if pending is not None and (not self.server.paced or self.ws_client.futures):
                stream, data = pending
                drops = self.server.drops.get(stream)
                if drops and self.server.sent.get(stream, 0) >= drops[0]:
                    drops.pop(0)
                    return WSMessage(WSMsgType.ERROR, ConnectionResetError("fake server dropped the connection"), None)
                self.server.pop(stream)
                return WSMessage(WSMsgType.TEXT, json.dumps(data), None)
            await asyncio.sleep(0.0005)
        return WSMessage(WSMsgType.CLOSED, None, None)

    async def close(self, *args: Any, **kwargs: Any) -> bool:
        self.closed = True
        return True

    async def ping(self, *args: Any) -> None:
        return None

    async def pong(self, *args: Any) -> None:
        return None


def pro_client(
    cls: type, recorded: dict[str, Any], server: FakeBinanceServer, has: dict[str, bool] | None = None
) -> Any:
    client = cls({"enableRateLimit": False})
    client.set_markets(copy.deepcopy(recorded["markets"]))
    if has:
        client.has = {**client.has, **has}
    server.install(client)
    return client


def expected_trades(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "ts_ns": d["T"] * MS,
            "trade_id": d["t"],
            "price": float(d["p"]),
            "qty": float(d["q"]),
            "side": -1 if d["m"] else 1,
            EXEC_TYPE: d["X"],
        }
        for d in (m["data"] for m in messages if m.get("stream", "").endswith("@trade"))
    ]


def without_recv(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "recv_ns"} for r in rows]


@pytest.mark.realdata
def test_stream_turns_recorded_binance_messages_into_rows(
    recorded: dict[str, Any], usdm_messages: list[dict[str, Any]]
) -> None:
    server = FakeBinanceServer(usdm_messages)
    client = pro_client(ccxt.pro.binanceusdm, recorded, server)
    symbol = "BTC/USDT:USDT"
    source = ExchangeSource(
        exchange_config("binanceusdm"),
        ExchangeSourceConfig(mode="stream", duration_s=60, poll_interval_s=0.05, order_book_depth=5),
        (symbol,),
        client=client,
        clock_ns=server.clock,
    )
    started = time.monotonic()
    batches = run(source)
    assert time.monotonic() - started < 15
    assert server.done_at is not None, "the run ended before every recorded message was sent"
    assert sorted(map(sorted, server.subscribed)) == [
        ["btcusdt@bookTicker"],
        ["btcusdt@depth@100ms"],
        ["btcusdt@trade"],
    ]
    assert all(c.closed for c in server.connections) and not client.clients  # close() ran

    # trades: every recorded @trade, in order, parsed by ccxt.pro and normalised
    trades = batches[(symbol, Kind.TRADES)].rows
    assert EXEC_TYPE in trades.column_names
    assert without_recv(trades.to_pylist()) == expected_trades(usdm_messages)
    assert len(trades) > 400

    # quotes: every recorded @bookTicker (the server waits for the consumer)
    ticks = [m["data"] for m in usdm_messages if m.get("stream", "").endswith("@bookTicker")]
    assert without_recv(batches[(symbol, Kind.QUOTES)].rows.to_pylist()) == [
        {
            "ts_ns": d["T"] * MS,
            "update_id": d["u"],
            "bid_px": float(d["b"]),
            "bid_qty": float(d["B"]),
            "ask_px": float(d["a"]),
            "ask_qty": float(d["A"]),
        }
        for d in ticks
    ]

    # depth: ccxt syncs the book from the REST snapshot + diffs; each stored snapshot must equal
    # the book rebuilt here by Binance's rule at the same update id
    assert [urlsplit(u).path for u in server.rest_urls if "depth" in u] == ["/fapi/v1/depth"]
    depth = batches[(symbol, Kind.DEPTH)].rows.to_pylist()
    books = rebuild_books(server.snapshot, usdm_messages)  # type: ignore[arg-type]
    by_update: dict[int, list[dict[str, Any]]] = {}
    for row in depth:
        by_update.setdefault(row["update_id"], []).append(row)
    assert len(by_update) >= 3
    for update_id, rows in by_update.items():
        ts_ms, bids, asks = books[update_id]
        assert {r["ts_ns"] for r in rows} == {ts_ms * MS}
        assert all(r["is_snapshot"] for r in rows)
        assert [(r["price"], r["qty"]) for r in rows if r["side"] == 1] == bids[:5]
        assert [(r["price"], r["qty"]) for r in rows if r["side"] == -1] == asks[:5]

    funding = batches[(symbol, Kind.FUNDING)].rows.to_pylist()
    assert funding and {(r["mark_px"], r["funding_rate"], r["next_funding_ns"]) for r in funding} == {
        (45802.81129892, 0.00063521, 1621267200000 * MS)
    }


def rebuild_books(snapshot: dict[str, Any], messages: list[dict[str, Any]]) -> dict[int, tuple[int, list, list]]:
    """Binance's USD-M rule, independently of ccxt: the book (ts ms, bids, asks) after each diff."""
    last = snapshot["lastUpdateId"]
    bids = {float(p): float(q) for p, q in snapshot["bids"]}
    asks = {float(p): float(q) for p, q in snapshot["asks"]}

    def view(ts: int) -> tuple[int, list, list]:
        return (
            ts,
            sorted(((p, q) for p, q in bids.items() if q), reverse=True),
            sorted((p, q) for p, q in asks.items() if q),
        )

    books = {last: view(snapshot["T"])}
    previous = None
    for message in messages:
        if "@depth" not in message.get("stream", ""):
            continue
        diff = message["data"]
        if diff["u"] < last:
            continue
        if previous is None:
            assert diff["U"] <= last <= diff["u"]
        else:
            assert diff["pu"] == previous
        for side, levels in ((bids, diff["b"]), (asks, diff["a"])):
            for price, qty in levels:
                side[float(price)] = float(qty)
        previous = diff["u"]
        books[diff["u"]] = view(diff["E"])  # ccxt stamps the book with the event time E
    return books


@pytest.mark.realdata
def test_stream_reconnects_with_backoff_and_resubscribes(
    recorded: dict[str, Any], usdm_messages: list[dict[str, Any]]
) -> None:
    # not paced: trades arrive in bursts and ccxt's trade cache must hand over every one
    server = FakeBinanceServer(usdm_messages, paced=False, drops={"btcusdt@trade": [100, 100, 400]})
    only_trades = {"watchBidsAsks": False, "watchOrderBook": False, "fetchFundingRate": False}
    client = pro_client(ccxt.pro.binanceusdm, recorded, server, has=only_trades)
    delays: list[float] = []
    source = ExchangeSource(
        exchange_config("binanceusdm", max_retries=2),
        ExchangeSourceConfig(mode="stream", duration_s=60, poll_interval_s=1),
        ("BTC/USDT:USDT",),
        client=client,
        clock_ns=server.clock,
        sleep=delays.append,
    )
    batches = run(source)
    # two drops in a row (1 s, 2 s), a working connection again, then one more drop (1 s)
    assert delays == [1.0, 2.0, 1.0]
    assert server.subscribed == [["btcusdt@trade"]] * 4
    assert len(server.connections) == 4
    assert set(batches) == {("BTC/USDT:USDT", Kind.TRADES)}
    assert without_recv(batches[("BTC/USDT:USDT", Kind.TRADES)].rows.to_pylist()) == expected_trades(usdm_messages)


@pytest.mark.realdata
def test_stream_gives_up_after_max_retries(recorded: dict[str, Any], usdm_messages: list[dict[str, Any]]) -> None:
    server = FakeBinanceServer(usdm_messages, drops={"btcusdt@trade": [0] * 10})
    only_trades = {"watchBidsAsks": False, "watchOrderBook": False, "fetchFundingRate": False}
    client = pro_client(ccxt.pro.binanceusdm, recorded, server, has=only_trades)
    delays: list[float] = []
    source = ExchangeSource(
        exchange_config("binanceusdm", max_retries=2, backoff_s=0.5),
        ExchangeSourceConfig(mode="stream", duration_s=60),
        ("BTC/USDT:USDT",),
        client=client,
        clock_ns=server.clock,
        sleep=delays.append,
    )
    expected = r"^binanceusdm watch_trades\(BTC/USDT:USDT\) failed after 2 retries: NetworkError"
    with pytest.raises(SourceError, match=expected):
        run(source)
    assert delays == [0.5, 1.0]
    assert all(c.closed for c in server.connections) and not client.clients


@pytest.mark.realdata
def test_coin_m_trades_are_converted_to_base_coin(recorded: dict[str, Any], shared_data: Path) -> None:
    """ccxt.pro binancecoinm parses recorded COIN-M trades (q in 100 USD contracts); qty is BTC."""
    path = shared_data / "binance_ws_raw" / "cm_btcusd_perp_20240808.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    raw = []
    with gzip.open(path, "rt") as lines:
        for line in lines:
            message = json.loads(line.split(" ", 1)[1])
            if message.get("stream", "").endswith("@trade"):
                raw.append(message["data"])
            if len(raw) == 50:
                break
    client = ccxt.pro.binancecoinm({"enableRateLimit": False})
    client.set_markets(copy.deepcopy(recorded["markets"]))

    async def parse() -> list[dict[str, Any]]:
        ws_client = client.client(client.urls["api"]["ws"]["inverse"] + "/0")
        for data in raw:
            client.handle_message(ws_client, data)
        trades = list(client.trades["BTC/USD:BTC"])
        await client.close()
        return trades

    trades = asyncio.run(parse())
    market = client.market("BTC/USD:BTC")
    assert (market["inverse"], market["contractSize"]) == (True, 100)
    rows = [trade_row(t, market, T0) for t in trades]
    assert [(r["trade_id"], r["price"], r["side"]) for r in rows] == [  # type: ignore[index]
        (d["t"], float(d["p"]), -1 if d["m"] else 1) for d in raw
    ]
    for row, data in zip(rows, raw):
        assert row["qty"] == pytest.approx(float(data["q"]) * 100 / float(data["p"]), rel=1e-12)  # type: ignore[index]


def test_trade_rows_keep_bad_values_and_reject_unusable_ids() -> None:
    market = {"contract": True, "linear": True, "inverse": False, "contractSize": 0.01}
    ok = trade_row({"id": "7", "timestamp": 1, "price": None, "amount": 3, "side": None, "info": {}}, market, 5)
    assert ok == {"ts_ns": MS, "recv_ns": 5, "trade_id": 7, "price": None, "qty": 0.03, "side": 0, EXEC_TYPE: None}
    assert trade_row({"id": "abc-1", "timestamp": 1}, market, 5) == "trade id 'abc-1' is not an integer"
    # bookTicker: the transaction time T wins over ccxt's timestamp (the event time E)
    ticker = {"bid": 1.0, "bidVolume": 2, "ask": 1.5, "askVolume": 3, "timestamp": 20, "info": {"T": 10, "u": 99}}
    assert bidask_row(ticker, market, 5) == {
        "ts_ns": 10 * MS, "recv_ns": 5, "update_id": 99, "bid_px": 1.0, "bid_qty": 0.02, "ask_px": 1.5, "ask_qty": 0.03
    }

    buffer = RowBuffer("okx", "exchange:okx:rest:BTC/USDT:USDT")
    buffer.add("BTC/USDT:USDT", Kind.TRADES, ok)  # type: ignore[arg-type]
    buffer.reject("BTC/USDT:USDT", Kind.TRADES, "trade id 'abc-1' is not an integer", {"id": "abc-1"})
    (batch,) = buffer.batches(("BTC/USDT:USDT",))
    assert batch.rows.schema == SCHEMAS[Kind.TRADES]  # no exec_type column when none was given
    assert batch.rows.column("price").to_pylist() == [None]
    assert batch.rejects.to_pylist() == [
        {
            "ts_ns": None,
            "recv_ns": None,
            "reason": "trade id 'abc-1' is not an integer",
            "source": "exchange:okx:rest:BTC/USDT:USDT",
            "row": '{"id": "abc-1"}',
        }
    ]
