"""`autoscalp serve` through faults (issue 7): feed disconnects, a feed gone silent, duplicated and
out-of-order ticks, a corrupt model artefact, a tracking server that is down, a burst of venue
errors. The daemon is the product's (``build_daemon``), in process; each time it keeps running in a
defined state and says why (/health, /metrics, the journal).

The exchange feed is the real ``ExchangeFeed`` on a real ccxt.pro client fed the recorded Binance
messages (tests/unit/serving/feeds/binance_fake.py replaces only the transports), with faults put
into the recording; the watchdog's restart builds a new client through the same path.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from flows.config import ProductConfig
from pipeline.config import TrackingConfig
from pipeline.data.schemas import Kind
from pipeline.training import aliases, tracking
from pipeline.training.registry import model_name
from serving.daemon.build import build_daemon
from serving.events import Quote, Trade
from serving.feeds import exchange as exchange_feed
from tests.unit.serving.feeds.binance_fake import FakeBinance, load_markets, load_recording, pro_client

from .serve_support import SHORT_WARMUP_ROLES, SYMBOL, closed_port, health, metrics, register_champion


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One MLflow store for the module (creating one costs seconds) with champion v1: its URI."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOSCALP_HOME", str(tmp_path_factory.mktemp("registry")))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        version = register_champion()
        yield tracking.tracking_uri(TrackingConfig()), version


@pytest.fixture()
def champion(home: Path, registry: Any, monkeypatch: pytest.MonkeyPatch) -> int:
    """The test's daemon reads the module's registry (its journal and venue stay in the test's home)."""
    uri, version = registry
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return version


class Running:
    """A daemon's ``run`` on a thread of its own."""

    def __init__(self, daemon: Any, duration_s: float = 120.0) -> None:
        self.daemon, self.result = daemon, {}
        self.thread = threading.Thread(target=self._run, args=(duration_s,), daemon=True)
        self.thread.start()

    def _run(self, duration_s: float) -> None:
        try:
            self.result["stats"] = self.daemon.run(duration_s)
        except BaseException as exc:  # noqa: BLE001 (the test reports it)
            self.result["error"] = exc

    def until(self, done, what: str, timeout_s: float = 30.0) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout_s
        while not done():
            assert self.thread.is_alive(), f"the daemon stopped ({self.result}) waiting for {what}"
            assert time.monotonic() < deadline, f"no {what} in {timeout_s} s: {self.daemon.healing.status()}"
            time.sleep(0.02)

    def stop(self) -> Any:
        assert self.thread.is_alive(), f"the daemon stopped on its own: {self.result}"
        self.daemon.request_stop("test over")
        self.thread.join(30)
        self.daemon.control.stop()
        assert "error" not in self.result, self.result
        return self.result["stats"]


def daemon_with(home: Path, serve: dict, risk: dict | None = None) -> Any:
    config = ProductConfig.model_validate({
        "data": {"store_dir": str(home / "store")},
        "serve": {"http_port": 0, "model_poll_s": 3600, **serve},
        "engine": {"features": SHORT_WARMUP_ROLES, "risk": risk or {}},
    })  # fmt: skip
    return build_daemon(config, config.serve, SYMBOL)


def notes(daemon: Any, kind: str) -> list[str]:
    return [text for _, _, text in daemon.journal.notes(kind)]


def seen(daemon: Any, kind: type) -> list[Any]:
    """What reached the engine: the market events the daemon kept for model warm-ups, in order."""
    events, _, complete = daemon.watcher.recent.since(0)
    assert complete
    return [e for e in events if type(e) is kind]


# ---- the exchange feed ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binance(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    return load_markets(shared_data), load_recording(shared_data, tmp_path_factory.mktemp("ws"), 1500)


def faulty(texts: list[str]) -> tuple[list[str], int, int, tuple[dict, dict]]:
    """The recording with a trade and a book ticker sent twice and two book tickers swapped; the
    line to drop the connection at and the line from which the exchange goes silent."""
    lines = list(texts)

    def numbers(stream: str) -> list[int]:
        return [n for n, t in enumerate(lines) if f'"btcusdt@{stream}"' in t]

    for n in sorted((numbers("trade")[20], numbers("bookTicker")[100]), reverse=True):
        lines.insert(n + 1, lines[n])
    ticker = numbers("bookTicker")
    data = [json.loads(lines[n])["data"] for n in ticker]
    k = next(k for k in range(200, len(ticker) - 1) if data[k]["T"] < data[k + 1]["T"])
    lines[ticker[k]], lines[ticker[k + 1]] = lines[ticker[k + 1]], lines[ticker[k]]
    return lines, numbers("trade")[60], ticker[700], (data[k], data[k + 1])


@pytest.mark.realdata
def test_exchange_feed_disconnects_silence_and_bad_ticks(home, champion, binance, monkeypatch):
    markets, recording = binance
    lines, drop, hold, swapped = faulty(recording["texts"])
    server = FakeBinance(lines, drops=[drop], hold_from=hold)
    monkeypatch.setattr(exchange_feed.ExchangeSource, "build_client", lambda self: pro_client(markets, server))
    options = {"mark_price": False, "backoff_base_s": 0.05, "backoff_jitter": 0.0}
    daemon = daemon_with(home, {"feed": "exchange", "stale_feed_s": 0.5, "exchange_feed": options},
                         risk={"stale_ms": 300})  # fmt: skip
    first = daemon.feed
    running = Running(daemon)
    reasons = set()

    def restarted() -> bool:  # meanwhile: what the kill switch says while the market is silent
        reasons.add(health(daemon)["kill_switch"]["reason"])
        return daemon.healing.watchdog.restarts >= 1 and not first.running

    running.until(restarted, "feed restart")
    assert server.pending() > 0  # still held: the new connection waits for the exchange too
    server.release()  # the exchange talks again, on the new connection
    expected_trades = [Trade(SYMBOL, r["ts_ns"], r["price"], r["qty"], r["side"])
                       for r in recording["files"][(SYMBOL, Kind.TRADES)].to_pylist()]  # fmt: skip
    streams = ("btcusdt@trade", "btcusdt@bookTicker")  # the depth lines are never asked for
    running.until(lambda: server.pending(streams) == 0 and len(seen(daemon, Trade)) == len(expected_trades),
                  "every line")  # fmt: skip
    state = health(daemon)
    running.stop()

    assert any(r.startswith("stale market data") for r in reasons), reasons  # REDUCING while silent
    assert state["state"] == "running" and state["healing"]["feed_restarts"] >= 1
    assert state["healing"]["feed_restart_reason"].startswith("no market data for 0.")
    feed_notes = notes(daemon, "feed")
    assert any(n.startswith("disconnected: trades: NetworkError") for n in feed_notes), feed_notes
    assert any(n.startswith("watchdog restart 1: no market data for 0.") for n in feed_notes), feed_notes
    # every trade once, in order (the repeated one dropped by the feed by its id); no book ticker
    # repeated or older than the one before (the feed passes the swapped one on: the daemon drops it)
    assert seen(daemon, Trade) == expected_trades
    quotes = seen(daemon, Quote)
    assert all(a.ts_ns <= b.ts_ns and a != b for a, b in zip(quotes, quotes[1:]))
    assert state["healing"]["ticks_rejected"]["out_of_order"] >= 1
    [late] = [Quote(SYMBOL, r["ts_ns"], r["bid_px"], r["bid_qty"], r["ask_px"], r["ask_qty"])
              for r in recording["files"][(SYMBOL, Kind.QUOTES)].to_pylist() if r["update_id"] == swapped[0]["u"]]
    assert late not in quotes  # the swapped one that came late never reached the engine


# ---- a silent synthetic feed ------------------------------------------------------------------------


def test_a_feed_whose_producer_hangs_is_replaced(home, champion):
    daemon = daemon_with(home, {"feed": "synthetic", "speed": 20.0, "stale_feed_s": 0.5})
    running = Running(daemon)
    running.until(lambda: daemon.stats.quotes > 50, "quotes")
    stuck, hang = daemon.feed, threading.Event()
    stuck.buffer.put = lambda event: hang.wait() or False  # its thread blocks as in a read that never returns
    stuck.stop = lambda timeout_s=5.0: hang.wait()  # and it cannot be stopped either
    reasons = set()

    def replaced() -> bool:
        reasons.add(health(daemon)["kill_switch"]["reason"])
        return daemon.feed is not stuck

    running.until(replaced, "a new feed")
    before = daemon.stats.quotes
    running.until(lambda: daemon.stats.quotes > before + 50, "quotes from the new feed")
    text = metrics(daemon)
    running.stop()
    hang.set()
    assert any(r.startswith("stale market data") for r in reasons), reasons
    assert "autoscalp_feed_restarts_total 1.0" in text
    assert [n for n in notes(daemon, "feed") if n.startswith("watchdog")] == [
        f"watchdog restart 1: {daemon.healing.watchdog.reason}"] and daemon.healing.watchdog.reason.startswith(
        "no market data for 0.")  # fmt: skip
    quotes = seen(daemon, Quote)
    assert all(a.ts_ns <= b.ts_ns for a, b in zip(quotes, quotes[1:]))


# ---- the model and the tracking server --------------------------------------------------------------


def ensemble_dir(version: int) -> Path:
    import mlflow
    from mlflow import MlflowClient

    uri = tracking.tracking_uri(TrackingConfig())
    source = MlflowClient(uri, registry_uri=uri).get_model_version(model_name(SYMBOL), str(version)).source
    location = mlflow.get_logged_model(source.removeprefix("models:/")).artifact_location
    return Path(urlparse(location).path) / "artifacts" / "ensemble"


@pytest.fixture()
def rollback(registry: Any, champion: int) -> Any:
    """v1 champion of the module's registry again after the test (which may point elsewhere by then)."""
    yield
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", registry[0])
        aliases.promote(model_name(SYMBOL), champion)


def test_a_corrupt_champion_a_dead_tracking_server_and_an_error_burst(home, champion, rollback, monkeypatch):
    v1 = champion
    daemon = daemon_with(home, {"feed": "synthetic", "speed": 0, "model_poll_s": 0.2},
                         risk={"recover_ms": 600_000})  # fmt: skip
    running = Running(daemon)
    running.until(lambda: daemon.stats.quotes > 1000, "quotes")

    # a new champion whose artefact is corrupt: the last good model trades on, with an alert
    v2 = register_champion(promote=False)
    (ensemble_dir(v2) / "compiled" / "compiled.npz").write_bytes(b"not an npz")
    aliases.promote(model_name(SYMBOL), v2)
    alert = 'autoscalp_model_alert{symbol="BTC/USDT:USDT"} 1.0'
    running.until(lambda: alert in metrics(daemon), "the alert metric")
    state = health(daemon)
    assert f"v{v2} failed to load" in state["model"]["alert"] and f"still trading {model_name(SYMBOL)} v{v1}" in \
        state["model"]["alert"]  # fmt: skip
    assert daemon.runtime.version.version == v1

    # the tracking server goes away: still v1, the alert says why
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    running.until(lambda: "unreachable" in (daemon.watcher.alert or ""), "the unreachable alert")
    quotes = daemon.stats.quotes
    running.until(lambda: daemon.stats.quotes > quotes + 500, "trading on")
    assert daemon.runtime.version.version == v1 and health(daemon)["state"] == "running"

    # the venue fails on every tick for a moment: an error burst holds the kill switch in REDUCING
    on_market, failing = daemon.broker.on_market, threading.Event()

    def flaky(event):  # noqa: ANN001, ANN202
        if failing.is_set():
            raise ConnectionError("venue glitch")
        return on_market(event)

    daemon.broker.on_market = flaky
    failing.set()
    running.until(lambda: daemon.healing.errors.total >= 50, "errors")
    failing.clear()
    running.until(lambda: health(daemon)["kill_switch"]["reason"].startswith("error burst"), "the burst on /health")
    state, text = health(daemon), metrics(daemon)
    stats = running.stop()
    # the last failed event is a quote or a trade (both reach the venue first), whichever came last
    assert state["kill_switch"]["state"] == "reducing" and re.search(r"\(last: (Quote|Trade): ConnectionError: venue glitch\)",
                                                                     state["kill_switch"]["reason"])  # fmt: skip
    assert "autoscalp_error_burst 1.0" in text and "autoscalp_event_errors_total" in text
    assert notes(daemon, "error")[0].startswith("error burst: 20 errors in 10 s")
    assert stats.stopped_because == "test over" and stats.swaps == 0


def test_a_tracking_server_down_at_start(home, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    daemon = daemon_with(home, {"feed": "synthetic", "speed": 0})
    running = Running(daemon)
    running.until(lambda: daemon.stats.quotes > 500, "quotes")
    state, text = health(daemon), metrics(daemon)
    running.stop()
    assert state["state"] == "running" and "unreachable" in state["model"]["alert"]
    assert state["model"]["model"] == "no model" and state["kill_switch"]["state"] == "reducing"
    assert 'autoscalp_model_alert{symbol="BTC/USDT:USDT"} 1.0' in text
