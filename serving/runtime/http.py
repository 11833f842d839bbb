"""The daemon's local HTTP face: health, Prometheus metrics, and operator control.

- ``GET /health``: JSON (the daemon's state, feeds, kill switch, models with version, age and
  alert, the age of the last tick); always 200 while the process answers.
- ``GET /metrics``: the Prometheus text format (``Telemetry.exposition``).
- ``POST /control/pause``, ``/control/resume``, ``/control/flatten``: with ``Authorization: Bearer
  <token>`` (``AUTOSCALP_CONTROL_TOKEN``, or the token passed in), compared in constant time; 401
  without it or with a wrong one, 403 when no token is configured (control is then off). An
  optional JSON body ``{"reason": "..."}``. The command is queued (202) and the daemon applies it
  at a tick boundary (``ControlServer.pending``), so no request thread ever touches trading state.

stdlib ``http.server`` in a thread: no event loop to share with the feeds, and a request costs the
trading thread nothing but the GIL for the time it is served. Bound to 127.0.0.1 by default; put
it behind a TLS proxy before exposing it anywhere else.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

TOKEN_ENV = "AUTOSCALP_CONTROL_TOKEN"
ACTIONS = ("pause", "resume", "flatten")
MAX_BODY_BYTES = 4096


@dataclass(frozen=True)
class Command:
    """An operator's command, for the daemon to apply at the next tick boundary."""

    action: str  # one of ACTIONS
    reason: str
    received_s: float  # wall clock
    client: str


class ControlServer:
    def __init__(self, health: Callable[[], dict[str, Any]], metrics: Callable[[], bytes],
                 token: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:  # fmt: skip
        """``port`` 0 takes a free one (``self.port`` says which)."""
        self.health = health
        self.metrics = metrics
        self._token = (token if token is not None else os.environ.get(TOKEN_ENV) or "").encode()
        self.commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host}:{self.port}"

    def start(self) -> ControlServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                            name="control-http", daemon=True)  # fmt: skip
            self._thread.start()
            log.info("health, metrics and control on %s", self.url)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5.0)
            self._thread = None
        self._server.server_close()

    def pending(self) -> list[Command]:
        """Commands received since the last call, oldest first (an empty queue costs ~0.1 us)."""
        out = []
        while not self.commands.empty():
            try:
                out.append(self.commands.get_nowait())
            except queue.Empty:
                break
        return out

    def authorised(self, header: str | None) -> bool:
        if not header or not self._token:
            return False
        scheme, _, credentials = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._token)

    @property
    def control_enabled(self) -> bool:
        return bool(self._token)


def _handler(server: ControlServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "autoscalp"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                self._send(200, _json_bytes(server.health()), "application/json")
            elif self.path == "/metrics":
                self._send(200, server.metrics(), CONTENT_TYPE_LATEST)
            else:
                self._error(404, f"no {self.path}; try /health, /metrics, POST /control/<{'|'.join(ACTIONS)}>")

        def do_POST(self) -> None:  # noqa: N802
            prefix, _, action = self.path.rpartition("/")
            if prefix != "/control" or action not in ACTIONS:
                self._error(404, f"no {self.path}; control actions: {', '.join(ACTIONS)}")
                return
            if not server.control_enabled:
                self._error(403, f"control is off: no token configured (set {TOKEN_ENV})")
                return
            if not server.authorised(self.headers.get("Authorization")):
                log.warning("control %s refused: bad or missing token from %s", action, self.client_address[0])
                self._error(401, "Authorization: Bearer <token> required", {"WWW-Authenticate": "Bearer"})
                return
            reason = self._reason()
            if reason is None:
                return
            command = Command(action, reason, time.time(), self.client_address[0])
            server.commands.put(command)
            log.warning("control %s queued from %s: %s", action, command.client, reason or "(no reason)")
            self._send(202, _json_bytes({"queued": action, "reason": reason}), "application/json")

        def _reason(self) -> str | None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._error(413, f"body over {MAX_BODY_BYTES} bytes")
                return None
            body = self.rfile.read(length) if length else b""
            if not body.strip():
                return ""
            try:
                data = json.loads(body)
            except ValueError:
                self._error(400, 'body must be JSON: {"reason": "..."}')
                return None
            return str(data.get("reason", "")) if isinstance(data, dict) else ""

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            self._send(status, _json_bytes({"error": message}), "application/json", headers)

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            log.debug("%s %s", self.client_address[0], format % args)

    return Handler


def _json_bytes(data: Any) -> bytes:
    """JSON with NaN and infinities as null (JSON has no NaN)."""
    return json.dumps(_finite(data), default=str).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
