"""The long-running trading process: a feed in, the engine deciding, a broker out, everything
journaled, watched over HTTP, the champion swapped in without a restart.

One thread trades (``Daemon.run``); the feed produces in its own thread, the champion watcher loads
and warms new versions in its own, the HTTP server answers in its own. They meet only through
thread-safe hand-overs: the feed's buffer, the watcher's ``swap_ready``, the control queue.

Per market event, in this order: the broker sees it first (paper: the simulated venue may fill
resting orders), then the model runtime updates the features (and on a quote computes P(up)), then
the engine decides; its orders are journaled as intents, sent, and marked sent; whatever comes back
(fills, order updates) goes to the journal and the engine. Tick-to-decision latency is measured
from taking the event off the buffer to the engine's decision (features + ensemble + regime +
strategy + risk), before any I/O.

Start: the journal opens a new run (client ids are prefixed with it, so none repeats across
restarts), the broker and journal are reconciled (serving/state/reconcile.py), and at the first
market event, in its time and before the broker sees it, positions are handed to the new engine
(``resume``: it arms their stops) or closed (``flatten``). Not earlier: the engine's clock starts
with the market's (an order resting from before the crash that the first tick fills would find the
engine's data stale by the whole downtime, and the kill switch would close the resumed position),
and the paper venue has a fresh quote when the orders arrive. Stop (SIGTERM,
SIGINT, ``--duration`` or a finite feed's end): working orders are cancelled except the protective
stops; positions are kept or flattened per ``serve.on_shutdown``.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from serving.daemon.config import ServeConfig
from serving.engine import Engine
from serving.events import (
    Cancel, DecisionRecord, Fill, FundingPayment, Liquidation, MarketLimits, OrderDone, Quote, Trade,
)  # fmt: skip
from serving.feeds.base import DepthEvent, FeedStatus, MarkPrice
from serving.risk.kill_switch import STATES
from serving.runtime.model import ModelRuntime
from serving.state.reconcile import ReconcileReport, reconcile

log = logging.getLogger(__name__)
_MS = 1_000_000


@dataclass
class DaemonStats:
    events: int = 0
    quotes: int = 0
    trades: int = 0
    records: int = 0
    orders: int = 0
    fills: int = 0
    swaps: int = 0
    commands: list[str] = field(default_factory=list)
    stopped_because: str = ""


class Daemon:
    def __init__(self, config: ServeConfig, engine_config, symbol: str, limits: MarketLimits, feed, broker,
                 journal, watcher, telemetry, control=None) -> None:  # noqa: ANN001  # fmt: skip
        self.config, self.symbol, self.limits = config, symbol, limits
        self.feed, self.broker, self.journal, self.watcher = feed, broker, journal, watcher
        self.telemetry, self.control = telemetry, control
        self.stats = DaemonStats()
        self._stop = threading.Event()
        self._stop_reason = ""
        self._engine_config = engine_config
        self._last_ts = 0  # event time of the latest market event
        self._last_wall = time.monotonic()
        self.engine: Engine | None = None
        self.runtime: ModelRuntime | None = None
        self._restart: ReconcileReport | None = None  # reconciled, not yet acted on
        self._equity0 = 0.0  # the engine's equity at start (set in start())

    # ---- life cycle ---------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        self._stop_reason = self._stop_reason or reason
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: self.request_stop(signal.Signals(signum).name))

    def start(self, now_ns: int) -> None:
        run = self.journal.begin_run(now_ns)
        runtime = self.watcher.serving or ModelRuntime(self._roles(), None, 1)
        self.runtime = runtime
        config = (runtime.engine_config or self._engine_config).model_copy(update={"client_id_prefix": f"as{run}"})
        report = reconcile(self.journal, self.broker, self.config.on_restart, now_ns, client_id_prefix=f"rs{run}")
        for line in report.lines:
            log.info("reconcile: %s", line)
        self.engine = Engine(config, runtime.names, [self.limits], report.wallet_usdt)
        self._equity0 = self.engine.portfolio.equity_usdt  # PnL counts from the run's start
        self._restart = report  # acted on at the first market event (_after_restart)
        self.telemetry.set_model(self.symbol, runtime, self.watcher.alert)
        self.telemetry.set_state("running")
        self.feed.start()
        self.watcher.start()

    def run(self, duration_s: float | None = None) -> DaemonStats:
        """Trade until stopped (a signal, ``duration_s`` of wall time, the feed's end)."""
        self.start(time.time_ns())
        deadline = time.monotonic() + duration_s if duration_s else math.inf
        clock_ns = self.config.clock_ms * _MS
        next_clock = 0
        try:
            while not self._stop.is_set():
                if time.monotonic() >= deadline:
                    self.request_stop("duration reached")
                    break
                self._commands()
                self._maybe_swap()
                events = self.feed.drain(256)
                if not events:
                    event = self.feed.get(timeout_s=0.05)
                    events = [event] if event is not None else []
                for event in events:
                    self._on_event(event)
                now = self._event_now()
                if now >= next_clock:
                    if self._last_ts:  # the engine's clock starts with the market's (module doc)
                        self._handle(self.engine.on_clock(now), now)
                    self._deliver(self.broker.poll(now), now)
                    next_clock = now + clock_ns
                    self._report()
                if self.feed.done:
                    self.request_stop(f"the feed ended{': ' + self.feed.error if self.feed.error else ''}")
        finally:
            self.shutdown()
        self.stats.stopped_because = self._stop_reason
        return self.stats

    def shutdown(self) -> None:
        now = self._event_now()
        self.telemetry.set_state("stopping")
        engine = self.engine
        if engine is not None:
            if self.config.on_shutdown == "flatten":
                self._handle(engine.halt(now, "daemon shutdown: flatten"), now)
            else:  # keep positions: cancel what works except the protective stops
                cancels = [o for o in self.broker.open_orders(self.symbol) if not (o.type == "stop" and o.reduce_only)]
                if cancels:
                    self._send(_cancel_record(self.symbol, [o.client_id for o in cancels], now), now)
        self.journal.note("stop", self._stop_reason or "stopped", now)
        for part in (self.watcher.stop, self.feed.stop):
            try:
                part()
            except Exception:  # noqa: BLE001 (stop everything we can)
                log.exception("stopping %s", part)
        self.broker.close()
        self.telemetry.set_state("stopped")

    # ---- one event ------------------------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        kind = type(event)
        if kind is FeedStatus:
            self.telemetry.set_feed(self.symbol, event.state)
            self.journal.note("feed", f"{event.state}: {event.detail}", event.ts_ns or self._last_ts)
            return
        if kind is MarkPrice:
            return
        self.stats.events += 1
        self.watcher.recent.append(event)
        if kind is DepthEvent:
            self.runtime.on_depth(event.update)
            return
        if event.ts_ns > self._last_ts:
            self._last_ts, self._last_wall = event.ts_ns, time.monotonic()
        if self._restart is not None:
            self._after_restart(event.ts_ns)
        self._deliver(self.broker.on_market(event), event.ts_ns)
        engine = self.engine
        if kind is Quote:
            self.stats.quotes += 1
            started = time.perf_counter_ns()
            vector, p_up, ok = self.runtime.on_quote(event)
            record = engine.on_tick(event, vector, p_up, math.nan, ok)
            self.telemetry.tick(started, time.perf_counter_ns())
            if ok:
                self.telemetry.observe_prediction(self.symbol, event.ts_ns, 0.5 * (event.bid + event.ask), p_up)
        elif kind is Trade:
            self.stats.trades += 1
            self.runtime.on_trade(event)
            record = engine.on_trade(event)
            self.telemetry.trade()
        else:
            return
        self._handle(record, event.ts_ns)

    def _after_restart(self, ts_ns: int) -> None:
        """What reconciliation left to do, at ``ts_ns`` (the first market event's time)."""
        report, self._restart = self._restart, None
        if self.config.on_restart == "resume":
            for fill in report.engine_fills():  # hands the positions over; the engine arms their stops
                self._handle(self.engine.on_fill(fill._replace(ts_ns=ts_ns)), ts_ns)
            for record in report.cancel_stale:
                self._send(record._replace(ts_ns=ts_ns), ts_ns)
        else:
            for record in report.flatten:
                self._send(record._replace(ts_ns=ts_ns), ts_ns)
        for order in report.unknown_orders:
            self._send(_cancel_record(order.symbol, order.client_id, ts_ns), ts_ns)

    def _handle(self, record: DecisionRecord | None, ts_ns: int) -> None:
        if record is None:
            return
        self.stats.records += 1
        if record.orders or record.cancels:
            self._send(record, ts_ns)

    def _send(self, record: DecisionRecord, ts_ns: int) -> None:
        """Journal the intents, send, mark sent, then book what came back: never an order unjournaled."""
        self.journal.decision(record)
        events = self.broker.submit(record, ts_ns)
        self.journal.sent([o.client_id for o in record.orders], ts_ns)
        self.stats.orders += len(record.orders)
        self._deliver(events, ts_ns)

    def _deliver(self, events, ts_ns: int) -> None:  # noqa: ANN001
        engine = self.engine
        for event in events or ():
            kind = type(event)
            if kind is Fill:
                if not self.journal.fill(event):
                    continue  # already booked (a replayed report)
                self.stats.fills += 1
                record = engine.on_fill(event)
                position = engine.symbols[event.symbol].position
                st = engine.symbols[event.symbol]
                self.journal.position(event.symbol, position.qty, position.entry, st.stop_px, event.ts_ns)
            elif kind is OrderDone:
                self.journal.order_done(event)
                record = engine.on_order_done(event)
            elif kind is FundingPayment:
                self.journal.note("funding", f"{event.symbol} {event.amount_usdt:+.4f} USDT at {event.rate:+.6f}",
                                  event.ts_ns)  # fmt: skip
                record = engine.on_funding(event)
            elif kind is Liquidation:
                self.journal.note("liquidation", str(event), event.ts_ns)
                continue  # its closing Fill follows
            else:
                continue
            self._handle(record, ts_ns)

    # ---- between events -------------------------------------------------------------------------

    def _event_now(self) -> int:
        """Event time now: the latest event's, advanced by the wall time since (x speed), so timers
        fire when no data comes."""
        speed = self.config.speed or 1.0
        return self._last_ts + int((time.monotonic() - self._last_wall) * 1e9 * speed) if self._last_ts else 0

    def _commands(self) -> None:
        if self.control is None:
            return
        for command in self.control.pending():
            now = self._event_now()
            self.stats.commands.append(command.action)
            self.journal.note("control", f"{command.action}: {command.reason} ({command.client})", now)
            engine = self.engine
            if command.action == "pause":
                self._handle(engine.pause(now, command.reason or "operator pause"), now)
            elif command.action == "resume":
                self._handle(engine.resume(now), now)
            elif command.action == "flatten":
                self._handle(engine.halt(now, command.reason or "operator flatten"), now)

    def _maybe_swap(self) -> None:
        runtime = self.watcher.swap_ready()
        if runtime is None:
            return
        previous = self.runtime
        self.runtime = runtime
        if runtime.names != self.engine.vector_names:
            self.engine.set_vector_names(runtime.names)
        self.stats.swaps += 1
        self.journal.note("model", f"swap {previous.version_label} -> {runtime.version_label}", self._last_ts)
        self.telemetry.set_model(self.symbol, runtime, self.watcher.alert)

    def _report(self) -> None:
        engine, telemetry = self.engine, self.telemetry
        portfolio = engine.portfolio
        st = engine.symbols[self.symbol]
        telemetry.set_account(portfolio.equity_usdt, portfolio.equity_usdt - self._equity0, portfolio.drawdown)
        telemetry.set_position(self.symbol, st.position.qty, st.leverage)
        telemetry.set_kill_switch(STATES[engine.kill.state], engine.kill.reason)
        telemetry.set_model(self.symbol, self.runtime, self.watcher.alert)
        stats = self.feed.stats()
        telemetry.set_queue_depth(int(stats.get("queue_depth", 0)))


    def _roles(self) -> tuple[str, ...]:
        return tuple(self._engine_config.features.model_dump().values())


def _cancel_record(symbol: str, client_ids, ts_ns: int) -> DecisionRecord:  # noqa: ANN001
    ids = [client_ids] if isinstance(client_ids, str) else list(client_ids)
    return DecisionRecord(ts_ns, symbol, "control", (), (), math.nan, math.nan, False, "", "", math.nan, "", "",
                          tuple(Cancel(cid, symbol) for cid in ids), (), (), ("daemon: cancel",))  # fmt: skip
