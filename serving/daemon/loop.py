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
and the paper venue has a fresh quote when the orders arrive.

A model without a P(up) yet (the champion at a start: its features are cold; a replay is warmed on
the store's ticks before its start, serving/daemon/build.py) is not a model failure: until its
first P(up) the engine holds (``engine.warming``): resumed positions keep their stops and are
managed (stop backup, liquidation guard, trims), nothing new opens. Still none ``WARM_GRACE_QUOTES`` (serving/daemon/model_switch.py)
quotes after every feature has seen its declared warm-up, it is a failure again (REDUCING). With
no champion at all the daemon trades reducing-only, as it says.

A swapped-in champion's tuned strategy parameters (its ``autoscalp.strategy_params``, in
``runtime.engine_config``) take effect at the first moment no position is open
(``Engine.retune``): an open position keeps the stop, trailing rule and leverage it was opened
with. Either way it is journaled (kind ``strategy``). Stop (SIGTERM,
SIGINT, ``--duration`` or a finite feed's end): working orders are cancelled except the protective
stops; positions are kept or flattened per ``serve.on_shutdown``.

Self-healing (serving/daemon/healing.py): a silent or failed feed is restarted; an error handling
one event is counted and trading goes on, a burst of them holds the kill switch in REDUCING;
duplicated and out-of-order ticks never reach the engine; a journal write that fails stops the
daemon (``JournalFailure``: nothing more is sent, no clean stop note); a crash loop backs off at start.
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
from serving.daemon.gc_policy import restore_gc, settle_gc
from serving.daemon.healing import GuardedJournal, Healing, JournalFailure, crash_backoff
from serving.daemon.model_switch import ModelSwitch
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
                 journal, watcher, telemetry, control=None, feed_factory=None) -> None:  # noqa: ANN001  # fmt: skip
        """``feed_factory(after_ns)``: a fresh, unstarted feed whose market goes on after event time
        ``after_ns``, for the watchdog's restarts (None: a silent feed is only reported)."""
        self.config, self.symbol, self.limits = config, symbol, limits
        self.feed, self.broker, self.watcher = feed, broker, watcher
        self.journal = GuardedJournal(journal)  # a failed write raises JournalFailure: the daemon stops
        self.telemetry, self.control = telemetry, control
        self.feed_factory = feed_factory
        self.healing = Healing(config.healing, config.stale_feed_s)
        telemetry.registry.register(self.healing)
        self._accept = self.healing.guard.accept
        self._trouble = False  # an error burst holds the kill switch
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
        self.feedback = None  # serving.daemon.feedback.Feedback (build.py): drift, journal export
        self._drift = None  # the trading model's DriftMonitor, fed each quote's vector
        self._flatten_prefix = "rs-"  # client ids of this run's restart flatten orders (set in start())
        self.model_switch = ModelSwitch(self.journal)  # a new model's warm-up hold and strategy params
        self._gc_thresholds: tuple[int, ...] = ()  # to restore when run() ends (settle_gc)

    # ---- life cycle ---------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        self._stop_reason = self._stop_reason or reason
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: self.request_stop(signal.Signals(signum).name))

    def start(self, now_ns: int) -> None:
        delay, why = crash_backoff(self.journal.path, self.config.healing, now_ns)  # before this run counts
        run = self.journal.begin_run(now_ns)
        if delay:
            self.healing.crash_wait_s, self.healing.crash_reason = delay, why
            log.warning("%s", why)
            self.journal.note("crash_loop", why, now_ns)
            self.telemetry.set_state("backing_off")
            if self._stop.wait(delay):
                return  # stopped while waiting: nothing started
        runtime = self.watcher.serving or ModelRuntime(self._roles(), None, 1)
        self.runtime = runtime
        config = (runtime.engine_config or self._engine_config).model_copy(update={"client_id_prefix": f"as{run}"})
        self._flatten_prefix = f"rs{run}-"
        report = reconcile(self.journal, self.broker, self.config.on_restart, now_ns, client_id_prefix=f"rs{run}")
        for line in report.lines:
            log.info("reconcile: %s", line)
        self.engine = Engine(config, runtime.names, [self.limits], report.wallet_usdt)
        self._equity0 = self.engine.portfolio.equity_usdt  # PnL counts from the run's start
        self._restart = report  # acted on at the first market event (_after_restart)
        self.model_switch.hold_while_warming(self.engine, runtime, now_ns)
        self.telemetry.set_model(self.symbol, runtime, self.watcher.alert)
        self._model_changed(runtime, now_ns)
        self.telemetry.set_state("running")
        self._gc_thresholds = settle_gc()  # before the watchdog's clock: a full collection takes a while
        self._last_wall = time.monotonic()
        self.healing.watchdog.reset(self._last_wall)
        self.feed.start()
        self.watcher.start()
        if self.feedback is not None:
            self.feedback.start()

    def run(self, duration_s: float | None = None) -> DaemonStats:
        """Trade until stopped (a signal, ``duration_s`` of wall time, the end of a finite feed).
        Raises ``JournalFailure`` after stopping when the journal could not be written."""
        self.start(time.time_ns())
        deadline = time.monotonic() + duration_s if duration_s else math.inf
        clock_ns = self.config.clock_ms * _MS
        next_clock = 0
        crashed: BaseException | None = None
        try:
            while not self._stop.is_set():
                if time.monotonic() >= deadline:
                    self.request_stop("duration reached")
                    break
                try:
                    self._commands()
                    self._maybe_swap()
                except JournalFailure:
                    raise
                except Exception as exc:  # noqa: BLE001 (counted; a burst holds the kill switch)
                    self._error("control", exc)
                events = self.feed.drain(256)
                if not events:
                    event = self.feed.get(timeout_s=0.05)
                    events = [event] if event is not None else []
                for event in events:
                    try:
                        self._on_event(event)
                    except JournalFailure:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        self._error(type(event).__name__, exc)
                now = self._event_now()
                if now >= next_clock:
                    try:
                        if self._trouble:
                            self._hold_trouble(now, act=False)  # on_clock acts on it
                        if self._last_ts:  # the engine's clock starts with the market's (module doc)
                            self._handle(self.engine.on_clock(now), now)
                            if self.model_switch.pending is not None:
                                self._handle(self.model_switch.apply_retune(self.engine, now), now)
                        self._deliver(self.broker.poll(now), now)
                        self._report()
                    except JournalFailure:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        self._error("clock", exc)
                    next_clock = now + clock_ns
                self._watch_feed()
        except BaseException as exc:
            crashed = exc
            raise
        finally:
            self.shutdown(crashed)
            if self._gc_thresholds:
                restore_gc(self._gc_thresholds)
        self.stats.stopped_because = self._stop_reason
        return self.stats

    def shutdown(self, crashed: BaseException | None = None) -> None:
        """Cancel or flatten per config and note the stop: ``stop`` when clean, ``crash`` after an
        exception (the crash-loop back-off counts runs without a clean stop). After a journal
        failure nothing is sent and nothing noted; the parts are stopped all the same."""
        now = self._event_now()
        self.telemetry.set_state("stopping")
        engine = self.engine
        failure = crashed if isinstance(crashed, JournalFailure) else None
        try:
            if engine is not None and failure is None:
                if self.config.on_shutdown == "flatten":
                    self._handle(engine.halt(now, "daemon shutdown: flatten"), now)
                else:  # keep positions: cancel what works except the protective stops
                    cancels = [o for o in self.broker.open_orders(self.symbol)
                               if not (o.type == "stop" and o.reduce_only)]  # fmt: skip
                    if cancels:
                        self._send(_cancel_record(self.symbol, [o.client_id for o in cancels], now), now)
            if failure is None and crashed is None:
                self.journal.note("stop", self._stop_reason or "stopped", now)
            elif failure is None:
                self.journal.note("crash", f"{type(crashed).__name__}: {crashed}", now)
        except JournalFailure as exc:
            failure = exc
        if failure is not None:
            self.healing.failure = str(failure)
            log.critical("%s: the daemon stops without sending anything more", failure)
        stops = (self.watcher.stop, self.feed.stop) + ((self.feedback.stop,) if self.feedback is not None else ())
        for part in stops:  # feedback last: its final export reads the journal's last rows
            try:
                part()
            except Exception:  # noqa: BLE001 (stop everything we can)
                log.exception("stopping %s", part)
        self.broker.close()
        self.telemetry.set_state("failed" if failure is not None else "stopped")
        if failure is not None and crashed is None:
            raise failure

    # ---- one event ------------------------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        kind = type(event)
        if kind is FeedStatus:
            self.telemetry.set_feed(self.symbol, event.state)
            self.journal.note("feed", f"{event.state}: {event.detail}", event.ts_ns or self._last_ts)
            return
        if kind is MarkPrice:
            return
        if not self._accept(event):  # a duplicated or out-of-order tick (healing.TickGuard)
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
            if engine.warming:
                self.model_switch.warming_quote(engine, self.runtime, ok, event.ts_ns)
            record = engine.on_tick(event, vector, p_up, math.nan, ok)
            self.telemetry.tick(started, time.perf_counter_ns())
            if ok:
                self.telemetry.observe_prediction(self.symbol, event.ts_ns, 0.5 * (event.bid + event.ask), p_up)
                if self._drift is not None:
                    self._drift.observe(vector)
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
        self._deliver(events, ts_ns)  # (which rewarms the model after booking them)
        if not events:
            self.runtime.rewarm()  # the writes left the model's tables cold for the next tick

    def _deliver(self, events, ts_ns: int) -> None:  # noqa: ANN001
        engine = self.engine
        for event in events or ():
            kind = type(event)
            if kind is Fill:
                if not self.journal.fill(event):
                    continue  # already booked (a replayed report)
                self.stats.fills += 1
                if event.client_id.startswith(self._flatten_prefix):
                    # flatten on restart closes what the previous run held, never this engine's: the
                    # engine stays flat (booking it would make it believe the opposite position)
                    held = self.broker.positions().get(event.symbol)
                    qty, entry = (held.qty, held.entry_px) if held is not None else (0.0, 0.0)
                    self.journal.position(event.symbol, qty, entry, math.nan, event.ts_ns)
                    continue
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
        if events:
            self.runtime.rewarm()  # (the journal wrote them)

    # ---- between events -------------------------------------------------------------------------

    def _event_now(self) -> int:
        """Event time now: the latest event's, advanced by the wall time since (x speed), so timers
        fire when no data comes."""
        speed = self.config.speed or 1.0
        return self._last_ts + int((time.monotonic() - self._last_wall) * 1e9 * speed) if self._last_ts else 0

    # ---- self-healing (serving/daemon/healing.py) ------------------------------------------------

    def _error(self, where: str, exc: Exception) -> None:
        """An exception handling one event: logged and counted; a burst holds the kill switch."""
        if self.healing.errors.record(where, exc):
            self._trouble = True
            now = self._event_now()
            self.journal.note("error", self.healing.errors.reason(), now or time.time_ns())
            self._hold_trouble(now, act=True)

    def _hold_trouble(self, now: int, act: bool) -> None:
        """While an error burst lasts, the kill switch is held in REDUCING with its reason (its own
        ``recover_ms`` lifts it afterwards); ``act``: the engine acts on it now (pulls entries,
        closes positions), not at its next event."""
        errors, engine = self.healing.errors, self.engine
        if not errors.trouble():
            self._trouble = False
            self.journal.note("error", "error burst over", now or time.time_ns())
            return
        if engine is None:
            return
        flat = all(st.position.qty == 0.0 for st in engine.symbols.values())
        note = engine.kill.evaluate(now, errors.reason(), flat)
        if note:
            self.journal.note("kill_switch", note, now or time.time_ns())
        if act and self._last_ts:
            self._handle(engine.on_clock(now), now)

    def _watch_feed(self) -> None:
        """A finite feed that ended stops the daemon; a silent or failed one is restarted."""
        feed = self.feed
        if feed.done and not feed.error:
            self.request_stop("the feed ended")
            return
        reason = self.healing.watchdog.due(time.monotonic(), self._last_wall, feed.done)
        if reason is not None:
            self._restart_feed(f"{reason} ({feed.error})" if feed.error else reason)

    def _restart_feed(self, reason: str) -> None:
        """A fresh feed from the factory (a new connection, subscribed from scratch) replaces this
        one, which is stopped on a thread of its own: a producer that hangs may never join."""
        old, watchdog = self.feed, self.healing.watchdog
        n = watchdog.restarted(time.monotonic(), reason)
        text = f"watchdog restart {n}: {reason}"
        log.warning("%s feed %s", self.symbol, text)
        self.telemetry.set_feed(self.symbol, "restarting")
        old.error = old.error or f"stopped by the watchdog: {reason}"  # never taken for a clean end
        threading.Thread(target=_stop_quietly, args=(old,), name="feed-stop", daemon=True).start()
        now = self._event_now() or time.time_ns()
        if self.feed_factory is None:
            self.journal.note("feed", f"{text}; no feed factory: not replaced", now)
            return
        try:
            feed = self.feed_factory(self._last_ts)
            feed.start()
        except Exception as exc:  # noqa: BLE001 (tried again after the back-off)
            log.exception("%s feed: the new feed failed to start", self.symbol)
            self.journal.note("feed", f"{text}; the new feed failed to start: {type(exc).__name__}: {exc}", now)
            return
        self.feed = feed
        self.journal.note("feed", text, now)

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
        self._model_changed(runtime, self._last_ts)
        switch = self.model_switch
        switch.hold_while_warming(self.engine, runtime, self._last_ts)
        switch.pending = switch.retune_for(self.engine, runtime)
        if switch.pending is not None and self._last_ts:
            now = self._event_now()
            self._handle(switch.apply_retune(self.engine, now), now)

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


    def _model_changed(self, runtime: ModelRuntime, ts_ns: int) -> None:
        """Journal which version trades from here on and take its drift monitor."""
        if self.feedback is not None:
            self._drift = self.feedback.model_changed(runtime, ts_ns)

    def _roles(self) -> tuple[str, ...]:
        return tuple(self._engine_config.features.model_dump().values())


def _stop_quietly(feed) -> None:  # noqa: ANN001
    try:
        feed.stop()
    except Exception:  # noqa: BLE001 (a feed being replaced: nothing depends on its stop)
        log.exception("stopping a replaced feed")


def _cancel_record(symbol: str, client_ids, ts_ns: int) -> DecisionRecord:  # noqa: ANN001
    ids = [client_ids] if isinstance(client_ids, str) else list(client_ids)
    return DecisionRecord(ts_ns, symbol, "control", (), (), math.nan, math.nan, False, "", "", math.nan, "", "",
                          tuple(Cancel(cid, symbol) for cid in ids), (), (), ("daemon: cancel",))  # fmt: skip
