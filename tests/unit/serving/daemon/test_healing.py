"""The daemon's self-healing (serving/daemon/healing.py): the feed watchdog's timing and back-off,
error bursts, the tick guard, the journal guard and the crash-loop back-off; then the real trading
loop with a real journal and paper broker: a silent feed replaced through the factory while the old
one hangs, a burst of broker errors, a journal that fails mid-run, a start in a crash loop."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from serving.brokers.paper import PaperBroker
from serving.config import EngineConfig
from serving.daemon.config import ServeConfig
from serving.daemon.healing import (
    ErrorBurst, FeedWatchdog, GuardedJournal, HealingConfig, JournalFailure, TickGuard, crash_backoff, unclean_runs,
)  # fmt: skip
from serving.daemon.loop import Daemon
from serving.events import Quote, Trade
from serving.runtime.telemetry import Telemetry
from serving.state.journal import Journal
from tests.unit.serving.state.conftest import LIMITS, SYMBOL, T0, Desk, venue_config
from tests.unit.serving.state.test_daemon_restart import ListFeed, NoChampion

MS = 1_000_000
NS = 1_000_000_000


# ---- the parts ---------------------------------------------------------------------------------


def test_a_silent_feed_is_due_after_stale_s_then_each_restart_in_a_row_waits_longer():
    w = FeedWatchdog(stale_s=5.0, backoff_s=1.0, backoff_max_s=4.0, now=0.0)
    assert w.due(4.9, last_event=0.0, failed=False) is None
    assert w.due(5.0, 0.0, False) == "no market data for 5.0 s"
    starts = [5.0]
    for expected_wait in (1.0, 2.0, 4.0, 4.0):  # doubled, capped
        w.restarted(starts[-1], "silent")
        due = starts[-1] + 5.0 + expected_wait
        assert w.due(due - 0.01, 0.0, False) is None and w.due(due, 0.0, False) is not None
        starts.append(due)
    assert w.restarts == w.in_a_row == 4
    w.restarted(starts[-1], "silent")
    assert w.due(starts[-1] + 1.0, last_event=starts[-1] + 0.5, failed=False) is None  # data again
    assert w.in_a_row == 0  # the back-off starts over
    assert w.due(starts[-1] + 5.5, starts[-1] + 0.5, False) == "no market data for 5.0 s"


def test_a_failed_feed_is_restarted_at_once_then_with_the_back_off():
    w = FeedWatchdog(stale_s=5.0, backoff_s=1.0, backoff_max_s=60.0, now=0.0)
    assert w.due(0.0, 0.0, failed=True) == "the feed failed"
    w.restarted(0.0, "the feed failed")
    assert w.due(0.9, 0.0, failed=True) is None and w.due(1.0, 0.0, failed=True) == "the feed failed"


def test_an_error_burst_starts_once_holds_while_errors_come_and_ends_with_its_window(caplog):
    clock = [0.0]
    burst = ErrorBurst(count=3, window_s=10.0, clock=lambda: clock[0])
    caplog.set_level(logging.ERROR, logger="serving.daemon.healing")
    started = []
    for t in (0.0, 0.2, 0.4, 0.6, 5.0):
        clock[0] = t
        started.append(burst.record("Quote", ValueError(f"bad at {t}")))
    assert started == [False, False, True, False, False]  # one burst, from the third error
    assert burst.active and burst.total == 5 and burst.bursts == 1
    assert burst.reason() == "error burst: 5 errors in 10 s (last: Quote: ValueError: bad at 5.0)"
    # one traceback per place and second: t=0 and t=5 (the three between are counted, not logged)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in tracebacks] == [
        "error handling Quote: ValueError: bad at 0.0 (1 in all)",
        "error handling Quote: ValueError: bad at 5.0 (5 in all) (3 more since the last logged)",
    ]
    assert burst.trouble(10.3)  # 0.4, 0.6 and 5.0 are within 10 s of 10.3
    assert not burst.trouble(10.5) and not burst.active  # two are: the burst is over
    clock[0] = 16.0
    assert not burst.record("Trade", KeyError("x"))  # a lone error is no burst


def test_the_tick_guard_keeps_duplicated_and_late_ticks_from_the_engine():
    guard = TickGuard()
    q = Quote(SYMBOL, T0, 100.0, 1.0, 100.1, 1.0)
    assert guard.accept(q)
    assert not guard.accept(q)  # the same update again
    assert not guard.accept(q._replace(ts_ns=T0 - 1, bid=99.9))  # older than the last
    assert guard.accept(q._replace(bid_qty=2.0))  # a new update at the same time
    assert guard.accept(q._replace(ts_ns=T0 + 1))
    t = Trade(SYMBOL, T0, 100.0, 0.1, 1)
    assert guard.accept(t) and guard.accept(t)  # two fills of one taker order: same time, price, size
    assert not guard.accept(t._replace(ts_ns=T0 - 1))
    assert guard.accept(Quote("ETH/USDT:USDT", T0 - 5, 1.0, 1.0, 1.1, 1.0))  # per symbol
    assert guard.rejected == {"duplicate": 1, "out_of_order": 2}


def test_a_failed_journal_write_is_a_journal_failure(tmp_path):
    desk = Desk(tmp_path)
    desk.quote(100.0, 100.05)
    desk.trade(desk.limit("x-1", 1, 99.0))
    journal = GuardedJournal(desk.journal)
    with pytest.raises(JournalFailure, match="journal decision failed: DuplicateOrderError: client id 'x-1'"):
        journal.decision(desk.record(desk.limit("x-1", 1, 99.0)))
    assert journal.path == desk.journal.path and journal.order("x-1").state == "sent"  # reads pass through
    desk.journal._db.close()  # the database goes away under the daemon
    with pytest.raises(JournalFailure, match="journal note failed: ProgrammingError"):
        journal.note("feed", "connected", T0)


def runs(journal: Journal, pattern: str, start_ns: int, every_s: float = 10.0) -> int:
    """Runs noted in the journal: 'c' stopped cleanly, 'x' did not (killed, crashed)."""
    ts = start_ns
    for kind in pattern:
        journal.begin_run(ts)
        if kind == "c":
            journal.note("stop", "SIGTERM", ts + NS)
        ts += int(every_s * NS)
    return ts


def test_the_crash_loop_back_off_doubles_with_each_unclean_run_and_resets_on_a_clean_stop(tmp_path):
    config = HealingConfig(crash_loop_runs=3, crash_loop_window_s=600, crash_backoff_s=1.0, crash_backoff_max_s=4.0)
    path = tmp_path / "journal.db"
    assert crash_backoff(path, config, T0) == (0.0, "")  # no journal yet
    journal = Journal(path)
    now = runs(journal, "cxx", T0)
    assert unclean_runs(path) == [T0 + 10 * NS, T0 + 20 * NS] and crash_backoff(path, config, now)[0] == 0.0
    delays = []
    for _ in range(5):
        now = runs(journal, "x", now)
        delays.append(crash_backoff(path, config, now)[0])
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]
    _, why = crash_backoff(path, config, now)
    assert why == "crash loop: the last 7 runs ended without a clean stop (3 within 30 s); waiting 4 s before trading"
    journal.note("crash", "RuntimeError: boom", now)  # a crash note is no clean stop
    assert crash_backoff(path, config, now)[0] == 4.0
    assert crash_backoff(path, config, now + 601 * NS)[0] == 0.0  # the third-last run is too long ago
    assert crash_backoff(path, config.model_copy(update={"crash_backoff_s": 0.0}), now)[0] == 0.0  # off
    now = runs(journal, "cxx", now)
    assert crash_backoff(path, config, now)[0] == 0.0  # a clean stop starts the count over


# ---- the trading loop ----------------------------------------------------------------------------


def quotes(start_ns: int, n: int, step_ms: int = 10) -> list[Quote]:
    return [Quote(SYMBOL, start_ns + k * step_ms * MS, 100.0 + 0.01 * (k % 7), 1.0, 100.05 + 0.01 * (k % 7), 1.0)
            for k in range(n)]  # fmt: skip


class SilentFeed(ListFeed):
    """Its events, then silence for ever (never done); ``stop`` hangs until ``release`` is set, as a
    producer stuck in a read would."""

    def __init__(self, events) -> None:  # noqa: ANN001
        super().__init__(events)
        self.release, self.stop_called = threading.Event(), threading.Event()

    def drain(self, n: int) -> list:
        out = super().drain(n)
        self.done = False
        return out

    def stop(self) -> None:
        self.stop_called.set()
        self.release.wait(30)


def daemon_for(tmp_path, feed, serve: ServeConfig | None = None, **kwargs) -> Daemon:  # noqa: ANN001
    journal = Journal(tmp_path / "journal.db")
    broker = PaperBroker(tmp_path / "paper.db", venue_config(), [LIMITS], 10_000.0)
    return Daemon(serve or ServeConfig(), EngineConfig(), SYMBOL, LIMITS, feed, broker, journal, NoChampion(),
                  Telemetry([SYMBOL]), **kwargs)  # fmt: skip


def test_a_silent_feed_is_replaced_while_the_old_one_hangs_and_no_tick_repeats(tmp_path):
    first = SilentFeed(quotes(T0, 50))
    # The new connection's market goes on from the daemon's last event, after the last three ticks
    # again (a cache handed over on subscribing): the last one repeated, two older than it.
    after = []
    again = quotes(T0, 50)[-3:]

    def factory(after_ns: int) -> ListFeed:
        after.append(after_ns)
        return ListFeed([again[1], again[0], again[2], *quotes(after_ns + 10 * MS, 30)])

    serve = ServeConfig(stale_feed_s=0.3, speed=0, healing=HealingConfig(feed_restart_backoff_s=0.1))
    daemon = daemon_for(tmp_path, first, serve, feed_factory=factory)
    started = time.monotonic()
    stats = daemon.run(duration_s=20)
    assert stats.stopped_because == "the feed ended"  # the second feed's end, not the first's silence
    assert 0.3 <= time.monotonic() - started < 10  # the hanging stop() did not hold the loop
    assert first.stop_called.is_set() and after == [quotes(T0, 50)[-1].ts_ns]
    first.release.set()
    assert stats.events == 80 and daemon.healing.guard.rejected == {"duplicate": 1, "out_of_order": 2}
    seen, _, _ = daemon.watcher.recent.since(0)
    assert [q.ts_ns for q in seen] == sorted(q.ts_ns for q in seen) and len(set(seen)) == len(seen)
    [note] = [text for _, kind, text in daemon.journal.notes() if kind == "feed"]
    assert note.startswith("watchdog restart 1: no market data for 0.")
    assert daemon.healing.status()["feed_restarts"] == 1
    assert b"autoscalp_feed_restarts_total 1.0" in daemon.telemetry.exposition()


def test_a_burst_of_broker_errors_is_counted_held_in_reducing_and_trading_goes_on(tmp_path):
    feed = ListFeed(quotes(T0, 200))
    serve = ServeConfig(speed=0, healing=HealingConfig(error_burst=5, error_window_s=60))
    daemon = daemon_for(tmp_path, feed, serve)
    on_market, calls = daemon.broker.on_market, [0]

    def flaky(event):  # noqa: ANN001, ANN202 (the venue fails on 10 ticks in a row)
        calls[0] += 1
        if 50 <= calls[0] < 60:
            raise ConnectionError(f"venue glitch {calls[0]}")
        return on_market(event)

    daemon.broker.on_market = flaky
    stats = daemon.run(duration_s=20)
    assert stats.stopped_because == "the feed ended" and calls[0] == 200  # every tick after the errors too
    health = daemon.healing.status()
    assert health["event_errors"] == 10 and health["last_error"] == "Quote: ConnectionError: venue glitch 59"
    errors = [text for _, kind, text in daemon.journal.notes() if kind == "error"]
    assert errors == ["error burst: 5 errors in 60 s (last: Quote: ConnectionError: venue glitch 54)"]
    assert daemon.engine.kill.state == 1  # REDUCING (without a model it already was: the reason says which)
    assert b"autoscalp_event_errors_total 10.0" in daemon.telemetry.exposition()


def test_a_journal_that_fails_stops_the_daemon_before_anything_unjournaled_is_sent(tmp_path):
    desk = Desk(tmp_path)
    desk.quote(100.0, 100.05)
    desk.trade(desk.limit("old-1", 1, 99.0))  # resting at the venue from the last run
    desk.restart()

    class FailingFeed(ListFeed):
        def drain(self, n: int) -> list:
            if self._connected and self._events:
                desk.journal._db.close()  # the disk goes away before the first market event
            return super().drain(n)

    first = desk.broker.venue.now + MS
    daemon = Daemon(ServeConfig(), EngineConfig(), SYMBOL, LIMITS, FailingFeed(quotes(first, 5)), desk.broker,
                    desk.journal, NoChampion(), Telemetry([SYMBOL]))  # fmt: skip
    with pytest.raises(JournalFailure, match="journal decision failed"):
        daemon.run(duration_s=20)  # the stale order's cancel could not be journaled
    assert daemon.telemetry.state == "failed" and daemon.healing.failure.startswith("journal decision failed")
    venue = PaperBroker(tmp_path / "paper.db", venue_config(), [LIMITS], 10_000.0)
    assert [o.client_id for o in venue.open_orders(SYMBOL)] == ["old-1"]  # the cancel was never sent
    venue.close()
    assert len(unclean_runs(tmp_path / "journal.db")) == 1  # no clean stop: it counts toward a crash loop


def test_a_start_in_a_crash_loop_waits_says_why_and_a_stop_ends_the_wait(tmp_path):
    journal = Journal(tmp_path / "journal.db")
    runs(journal, "xxx", time.time_ns() - 30 * NS)
    journal.close()
    serve = ServeConfig(speed=0, healing=HealingConfig(crash_backoff_s=0.3))
    daemon = daemon_for(tmp_path, ListFeed(quotes(T0, 5)), serve)
    started = time.monotonic()
    daemon.run(duration_s=20)
    assert time.monotonic() - started >= 0.3
    assert daemon.healing.status()["crash_loop"].startswith("crash loop: the last 3 runs ended without a clean stop")
    assert b"autoscalp_crash_backoff_seconds 0.3" in daemon.telemetry.exposition()
    assert [kind for _, kind, _ in daemon.journal.notes() if kind in ("crash_loop", "stop")] == ["crash_loop", "stop"]

    # three more unclean runs: a crash loop again; SIGTERM during the wait ends it at once
    runs(Journal(tmp_path / "journal.db"), "xxx", time.time_ns())
    slow = ServeConfig(speed=0, healing=HealingConfig(crash_backoff_s=30.0))
    daemon = daemon_for(tmp_path, ListFeed(quotes(T0, 5)), slow)
    threading.Timer(0.2, daemon.request_stop, args=("SIGTERM",)).start()
    started = time.monotonic()
    stats = daemon.run(duration_s=20)
    assert time.monotonic() - started < 5 and stats.stopped_because == "SIGTERM" and stats.events == 0
    assert daemon.journal.notes("stop")[-1][2] == "SIGTERM"  # a clean stop: the next start does not wait
    assert crash_backoff(tmp_path / "journal.db", slow.healing, time.time_ns())[0] == 0.0
