"""Self-healing of the daemon (issue 7): what keeps ``autoscalp serve`` trading in a defined state,
and saying why, when its parts fail. The trading loop (serving/daemon/loop.py) owns one ``Healing``.

- ``FeedWatchdog``: no market event for ``serve.stale_feed_s`` of wall time (or a feed whose
  producer failed): the feed is restarted, a fresh one from the factory build.py passes in (a new
  connection, subscribed from scratch). Restarts in a row with no market event between them back
  off: the n-th waits ``stale_feed_s + min(feed_restart_backoff_s * 2**(n - 2), max)``. While data
  is missing the engine is already REDUCING by its own rule (``risk.stale_ms`` of event time, which
  the daemon's clock advances with the wall clock): the watchdog does not repeat it.
- ``ErrorBurst``: an exception while handling one event (features, engine, broker) is logged with
  its reason and counted; ``error_burst`` of them within ``error_window_s`` put the kill switch in
  REDUCING with the reason, held while the burst lasts and lifted by the kill switch's own
  ``recover_ms``. The journal is different: an order that cannot be journaled must not be sent, so a
  failed journal write (``JournalFailure``, raised by ``GuardedJournal``) stops the daemon.
- ``TickGuard``: a quote older than the last one or equal to it, or a trade older than the last
  one, does not reach the engine (nor the broker or the model): counted as ``out_of_order`` or
  ``duplicate``. Trades at the same time as the last are kept: two fills of one taker order at one
  price carry the same time, price and size, and the event has no id to tell them from a repeat
  (the exchange feed drops repeated trade ids itself).
- ``crash_backoff``: at start, when the last ``crash_loop_runs`` runs all ended without a clean
  stop note, all started within ``crash_loop_window_s``, the daemon waits before trading:
  ``crash_backoff_s * 2**(unclean - crash_loop_runs)``, at most ``crash_backoff_max_s``. It reads the
  journal, so it holds under any supervisor (systemd, ``autoscalp up``, a shell loop).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import Field

from pipeline.config import Frozen
from pipeline.errors import AutoscalpError
from serving.events import Quote, Trade

log = logging.getLogger(__name__)
_NS = 1_000_000_000


class HealingConfig(Frozen):
    """``serve.healing``: back-offs and thresholds of the daemon's self-healing."""

    feed_restart_backoff_s: float = Field(1.0, ge=0, description="extra wait before the 2nd restart in a row of a "
                                          "silent feed, doubled for each further one")  # fmt: skip
    feed_restart_backoff_max_s: float = Field(60.0, ge=0, description="cap of that extra wait")
    error_burst: int = Field(20, gt=0, description="this many errors handling events within error_window_s: REDUCING")
    error_window_s: float = Field(10.0, gt=0)
    crash_loop_runs: int = Field(3, gt=0, description="this many runs in a row ended without a clean stop ...")
    crash_loop_window_s: float = Field(600.0, gt=0, description="... all started within this long: a crash loop")
    crash_backoff_s: float = Field(1.0, ge=0, description="wait before trading in a crash loop, doubled for each "
                                   "further crash (0: never wait)")  # fmt: skip
    crash_backoff_max_s: float = Field(60.0, ge=0, description="cap of that wait")


def doubling(base_s: float, max_s: float, n: int) -> float:
    """``min(base * 2**n, max)`` for n >= 0 (no overflow for large n)."""
    return min(base_s * 2.0 ** min(n, 60), max_s)


# ---- the feed watchdog ---------------------------------------------------------------------------


class FeedWatchdog:
    """When to restart the feed (see module doc). Times are ``time.monotonic()`` seconds."""

    def __init__(self, stale_s: float, backoff_s: float, backoff_max_s: float, now: float) -> None:
        self.stale_s, self.backoff_s, self.backoff_max_s = stale_s, backoff_s, backoff_max_s
        self.restarts = 0  # in all
        self.in_a_row = 0  # restarts with no market event since the first of them
        self.since = now  # silence counts from the last market event or restart, whichever is later
        self.reason = ""  # why the last restart happened ('' before any)

    def reset(self, now: float) -> None:
        """The feed (re)starts now: its silence counts from here."""
        self.since = now

    def due(self, now: float, last_event: float, failed: bool) -> str | None:
        """Why the feed must be restarted now, or None. ``last_event``: when the latest market event
        came; ``failed``: the feed's producer ended with an error."""
        if last_event > self.since:
            self.since, self.in_a_row = last_event, 0
        wait = self.backoff_wait()
        silent = now - self.since
        if failed and silent >= wait:
            return "the feed failed"
        if silent >= self.stale_s + wait:
            return f"no market data for {silent:.1f} s"
        return None

    def backoff_wait(self) -> float:
        return doubling(self.backoff_s, self.backoff_max_s, self.in_a_row - 1) if self.in_a_row else 0.0

    def restarted(self, now: float, reason: str) -> int:
        self.restarts += 1
        self.in_a_row += 1
        self.since, self.reason = now, reason
        return self.restarts


# ---- errors while handling events ------------------------------------------------------------------


class JournalFailure(AutoscalpError):
    """A journal write failed: the daemon stops rather than trade what it cannot journal."""


_JOURNAL_WRITES = frozenset(("begin_run", "decision", "intent", "sent", "order_done", "fill", "position", "adopt",
                             "note"))  # fmt: skip


class GuardedJournal:
    """The journal with every write's failure (a disk error, a full disk, a duplicate client id)
    raised as ``JournalFailure``, which the loop does not count as an event error but stops on."""

    def __init__(self, journal: Any) -> None:
        self.journal = journal

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.journal, name)
        if name not in _JOURNAL_WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except Exception as exc:
                raise JournalFailure(f"journal {name} failed: {type(exc).__name__}: {exc}") from exc

        setattr(self, name, write)  # found on the instance from now on
        return write


class ErrorBurst:
    """Errors handling events, counted, logged (a traceback at most once per ``LOG_EVERY_S`` per
    place) and judged: ``trouble()`` is the reason while ``count`` or more fell within ``window_s``."""

    LOG_EVERY_S = 1.0

    def __init__(self, count: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.count, self.window_s, self.clock = count, window_s, clock
        self.total = 0
        self.bursts = 0
        self.last = ""  # the latest error: where, type and message
        self._times: deque[float] = deque()
        self._logged: dict[str, tuple[float, int]] = {}  # where -> (last logged, suppressed since)
        self._active = False

    def record(self, where: str, exc: BaseException) -> bool:
        """One error; True when it starts a burst."""
        now = self.clock()
        self.total += 1
        self.last = f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        logged, suppressed = self._logged.get(where, (-1e18, 0))
        if now - logged >= self.LOG_EVERY_S:
            more = f" ({suppressed} more since the last logged)" if suppressed else ""
            log.error("error handling %s (%d in all)%s", self.last, self.total, more, exc_info=exc)
            self._logged[where] = (now, 0)
        else:
            self._logged[where] = (logged, suppressed + 1)
        self._times.append(now)
        was = self._active
        started = self.trouble(now) and not was
        if started:
            self.bursts += 1
            log.error("%s", self.reason())
        return started

    def trouble(self, now: float | None = None) -> bool:
        """Whether ``count`` errors fell within the last ``window_s``."""
        now = self.clock() if now is None else now
        times = self._times
        while times and now - times[0] > self.window_s:
            times.popleft()
        self._active = len(times) >= self.count
        return self._active

    @property
    def active(self) -> bool:
        """Whether a burst held at the last look (``record`` or ``trouble``)."""
        return self._active

    def reason(self) -> str:
        return f"error burst: {len(self._times)} errors in {self.window_s:g} s (last: {self.last})"


# ---- duplicated and out-of-order ticks -----------------------------------------------------------


class TickGuard:
    """Which quotes and trades reach the engine (module doc)."""

    def __init__(self) -> None:
        self.rejected = {"duplicate": 0, "out_of_order": 0}
        self._quote: dict[str, Quote] = {}
        self._trade_ns: dict[str, int] = {}

    def accept(self, event: Any) -> bool:
        # On every tick: fields by index (a NamedTuple's names are slower), equality only on a tie.
        kind = type(event)
        if kind is Quote:
            last = self._quote.get(event[0])
            if last is not None and event[1] <= last[1]:
                if event[1] < last[1]:
                    self.rejected["out_of_order"] += 1
                    return False
                if event == last:
                    self.rejected["duplicate"] += 1
                    return False
            self._quote[event[0]] = event
        elif kind is Trade:
            if event[1] < self._trade_ns.get(event[0], 0):
                self.rejected["out_of_order"] += 1
                return False
            self._trade_ns[event[0]] = event[1]
        return True


# ---- crash-loop back-off --------------------------------------------------------------------------


def unclean_runs(journal_path: str | Path) -> list[int]:
    """Start times (wall ns, oldest first) of the latest runs in a row that ended without a clean stop
    note, read from the journal's ``restart`` and ``stop`` notes (a run that is still running counts:
    call it before ``begin_run``)."""
    path = Path(journal_path)
    if not path.is_file():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT kind, ts_ns FROM events WHERE kind IN ('restart', 'stop') ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # no events table yet: a journal that never ran
        return []
    finally:
        db.close()
    runs: list[tuple[int, bool]] = []  # (start ns, clean)
    for kind, ts_ns in rows:
        if kind == "restart":
            runs.append((ts_ns, False))
        elif runs:
            runs[-1] = (runs[-1][0], True)
    unclean: list[int] = []
    for start_ns, clean in reversed(runs):
        if clean:
            break
        unclean.append(start_ns)
    return unclean[::-1]


def crash_backoff(journal_path: str | Path, config: HealingConfig, now_ns: int) -> tuple[float, str]:
    """(seconds to wait before trading, why) at a start; (0, '') unless in a crash loop."""
    starts = unclean_runs(journal_path)
    k = config.crash_loop_runs
    if len(starts) < k or not config.crash_backoff_s or now_ns - starts[-k] > config.crash_loop_window_s * _NS:
        return 0.0, ""
    delay = doubling(config.crash_backoff_s, config.crash_backoff_max_s, len(starts) - k)
    span = (now_ns - starts[-k]) / _NS
    return delay, (f"crash loop: the last {len(starts)} runs ended without a clean stop ({k} within {span:.0f} s); "
                   f"waiting {delay:g} s before trading")  # fmt: skip


# ---- all of it, for /health and /metrics -----------------------------------------------------------


class Healing:
    """The daemon's self-healing state: the parts above, ``status()`` for /health and a Prometheus
    collector (``collect``) for /metrics."""

    def __init__(self, config: HealingConfig, stale_feed_s: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.config = config
        self.watchdog = FeedWatchdog(stale_feed_s, config.feed_restart_backoff_s, config.feed_restart_backoff_max_s,
                                     now)  # fmt: skip
        self.errors = ErrorBurst(config.error_burst, config.error_window_s)
        self.guard = TickGuard()
        self.crash_wait_s = 0.0
        self.crash_reason = ""
        self.failure = ""  # why the daemon stopped on its own (a journal failure)

    def status(self) -> dict[str, Any]:
        w, e = self.watchdog, self.errors
        return {
            "feed_restarts": w.restarts,
            "feed_restarts_in_a_row": w.in_a_row,
            "feed_restart_reason": w.reason,
            "event_errors": e.total,
            "last_error": e.last,
            "error_burst": e.reason() if e.active else "",
            "ticks_rejected": dict(self.guard.rejected),
            "crash_loop": self.crash_reason,
            "failure": self.failure,
        }

    def collect(self):  # noqa: ANN201 (prometheus_client's collector protocol)
        yield CounterMetricFamily("autoscalp_feed_restarts", "Feeds restarted by the watchdog",
                                  value=self.watchdog.restarts)  # fmt: skip
        yield CounterMetricFamily("autoscalp_event_errors", "Errors handling an event (the daemon went on)",
                                  value=self.errors.total)  # fmt: skip
        yield GaugeMetricFamily("autoscalp_error_burst", "1 while an error burst holds the kill switch in REDUCING",
                                value=1.0 if self.errors.active else 0.0)  # fmt: skip
        rejected = CounterMetricFamily("autoscalp_ticks_rejected", "Ticks kept from the engine", labels=["reason"])
        for reason, count in self.guard.rejected.items():
            rejected.add_metric([reason], count)
        yield rejected
        yield GaugeMetricFamily("autoscalp_crash_backoff_seconds", "Wait before trading at this start (crash loop)",
                                value=self.crash_wait_s)  # fmt: skip
