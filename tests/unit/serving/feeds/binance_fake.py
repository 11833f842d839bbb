"""Binance's side of a ccxt.pro exchange, for tests: only the transports are replaced.

``FakeBinance.install(client)`` swaps the websocket under each of ccxt's ``Client``s for a
``FakeWebSocket`` (aiohttp's ``ClientWebSocketResponse`` as far as ccxt uses it) and the REST
transport (``client.fetch``) for recorded answers. Everything above stays ccxt's: its client,
subscriptions, ``handle_message`` dispatch, parsers, caches and futures.

The socket answers SUBSCRIBE and then sends the recorded lines of the subscribed streams, exactly
as recorded (combined-stream envelope; ccxt unwraps it), one connection's streams in recorded
order. Trades, book tickers and mark prices go out only while ccxt has a future waiting for that
channel, so every update reaches the consumer (ccxt keeps only the latest ticker otherwise);
depth diffs go out as fast as they are read, as Binance sends them.

Faults: ``connect_failures`` dials refused; ``drops`` (recorded line numbers, repeat one to fail it
again) fail the connection carrying that line, before sending it (the line goes out after the reconnect); ``skip`` lines
are never sent (a lost depth diff); lines from ``hold_from`` on wait for ``release()``.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ccxt
import ccxt.pro
import pytest
from aiohttp import WSMessage, WSMsgType

from pipeline.data.sources.files import FileSource

PACED = {"trade": "trade::", "bookTicker": "bidask:", "markPrice": "markPrice:"}


def stream_base(name: str) -> str:
    """``btcusdt@depth@0ms`` -> ``btcusdt@depth``: ccxt may ask another speed than was recorded."""
    return "@".join(name.split("@")[:2])


class FakeBinance:
    def __init__(
        self,
        lines: Iterable[str],
        rest: dict[str, list[Any]] | None = None,
        connect_failures: int = 0,
        drops: Iterable[int] = (),
        skip: Iterable[int] = (),
        hold_from: int | None = None,
    ) -> None:
        self.queues: dict[str, deque[tuple[int, str]]] = {}
        skipped = set(skip)
        for number, text in enumerate(lines):
            message = json.loads(text)
            if "stream" in message and number not in skipped:
                self.queues.setdefault(stream_base(message["stream"]), deque()).append((number, text))
        self.rest = {path: list(answers) for path, answers in (rest or {}).items()}
        self.connect_failures = connect_failures
        self.drops = list(drops)
        self.hold_from = hold_from
        self.subscribed: list[list[str]] = []
        self.rest_urls: list[str] = []
        self.connections: list[FakeWebSocket] = []
        self.dials = 0

    # ---- wiring ----

    def install(self, client: Any) -> None:
        make_client = client.client

        def patched(url: str) -> Any:
            ws_client = make_client(url)
            if not getattr(ws_client, "_fake", False):
                ws_client._fake = True

                async def create_connection(session: Any, ws_client: Any = ws_client) -> FakeWebSocket:
                    self.dials += 1
                    if self.connect_failures > 0:
                        self.connect_failures -= 1
                        raise ConnectionRefusedError("fake Binance refused the connection")
                    connection = FakeWebSocket(self, ws_client)
                    self.connections.append(connection)
                    return connection

                ws_client.create_connection = create_connection
            return ws_client

        async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
            self.rest_urls.append(url)
            answers = self.rest.get(urlsplit(url).path)
            if not answers:
                raise ccxt.BadRequest(f"no recording for {urlsplit(url).path}")
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
            if isinstance(answer, BaseException):
                raise answer
            return copy.deepcopy(answer)

        client.client = patched
        client.fetch = fetch

    # ---- state the tests read ----

    def pending(self, streams: Iterable[str] | None = None) -> int:
        """Lines not yet sent of the given streams (default: all)."""
        names = self.queues if streams is None else streams
        return sum(len(self.queues.get(s, ())) for s in names)

    def release(self) -> None:
        self.hold_from = None

    def rest_paths(self) -> list[str]:
        return [urlsplit(u).path for u in self.rest_urls]


class FakeWebSocket:
    _conn = None  # ccxt peeks at aiohttp's read buffer through it

    def __init__(self, server: FakeBinance, ws_client: Any) -> None:
        self.server = server
        self.ws_client = ws_client
        self.closed = False
        self.streams: list[str] = []
        self.outbox: deque[str] = deque()

    async def send_str(self, text: str) -> None:
        request = json.loads(text)
        if request.get("method") == "SUBSCRIBE":
            self.server.subscribed.append(request["params"])
            self.streams += [stream_base(p) for p in request["params"]]
            self.outbox.append(json.dumps({"result": None, "id": request["id"]}))

    def _next(self) -> tuple[str, int, str] | None:
        best = None
        for stream in self.streams:
            queue = self.server.queues.get(stream)
            if queue and (best is None or queue[0][0] < best[1]):
                best = (stream, *queue[0])
        return best

    def _ready(self, stream: str) -> bool:
        prefix = PACED.get(stream.split("@")[1])
        return prefix is None or any(key.startswith(prefix) for key in self.ws_client.futures)

    async def receive(self) -> WSMessage:
        server = self.server
        while not self.closed:
            if self.outbox:
                return WSMessage(WSMsgType.TEXT, self.outbox.popleft(), None)
            head = self._next()
            if head is not None:
                stream, number, text = head
                held = server.hold_from is not None and number >= server.hold_from
                if not held and self._ready(stream):
                    if number in server.drops:
                        server.drops.remove(number)
                        error = ConnectionResetError("fake Binance dropped the connection")
                        return WSMessage(WSMsgType.ERROR, error, None)
                    server.queues[stream].popleft()
                    return WSMessage(WSMsgType.TEXT, text, None)
            await asyncio.sleep(0.0005)
        return WSMessage(WSMsgType.CLOSED, None, None)

    async def close(self, *args: Any, **kwargs: Any) -> bool:
        self.closed = True
        return True

    async def ping(self, *args: Any) -> None:
        return None

    async def pong(self, *args: Any) -> None:
        return None


# ---- the recordings (../shared/data) ----------------------------------------------------------------


def load_markets(shared_data: Path) -> dict[str, Any]:
    """ccxt's recorded Binance markets, or skip."""
    path = shared_data / "ccxt_recorded" / "markets_binance.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return json.loads(path.read_text())


def load_recording(shared_data: Path, folder: Path, lines: int) -> dict[str, Any]:
    """The first ``lines`` lines of the BTCUSDT capture: their JSON text, the REST snapshot, and the
    files source's parse of them (or skip)."""
    path = shared_data / "binance_ws_raw" / "usdm_btcusdt_20240808.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with gzip.open(path, "rt") as handle:
        raw = [line for _, line in zip(range(lines), handle)]
    sample = folder / "usdm_btcusdt_sample.gz"
    with gzip.open(sample, "wt") as handle:
        handle.writelines(raw)
    texts = [line.rstrip("\n").split(" ", 1)[1] for line in raw]
    snapshot = next(json.loads(t) for t in texts if t.startswith('{"lastUpdateId"'))
    batches = {(b.symbol, b.kind): b.rows for b in FileSource(str(sample)).batches()}
    return {"texts": texts, "snapshot": snapshot, "files": batches}


def pro_client(markets: dict[str, Any], server: FakeBinance) -> Any:
    """A real ccxt.pro binanceusdm with the recorded markets, its transports the fake's."""
    client = ccxt.pro.binanceusdm({"enableRateLimit": False})
    client.set_markets(copy.deepcopy(markets))
    server.install(client)
    return client
