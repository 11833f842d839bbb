"""What every market-data feed gives the daemon: normalised events in a bounded buffer.

The daemon's loop is synchronous and single-threaded; a feed produces in its own thread and the
daemon drains the buffer (``get``/``drain``). Events are the engine's ``Quote`` and ``Trade``
(serving/events.py) plus the feed's own: ``MarkPrice``, ``DepthEvent`` (one raw depth message,
what the feature engine's L2 book takes: ``FeatureEngine.on_depth(event.update)``) and
``FeedStatus`` (why the feed is in a state).

The buffer (``EventBuffer``) is bounded softly by ``max_events``. While it holds that many,
*state* events are conflated per symbol: a newer ``Quote`` or ``MarkPrice`` replaces the one of
the same symbol still waiting, and a depth diff that chains onto the waiting diff of its symbol is
merged into it (levels of the newer win, ids span both: the book after it is the same). The
replaced event is taken out of its place and the newer one goes to the back, so the daemon still
sees events in arrival order. ``Trade`` and ``FeedStatus`` are never dropped or merged, nor is a
depth snapshot or a diff that does not chain (the feature engine must see the gap).

Memory bound: at most ``max_events`` + one waiting state event per (symbol, kind) + the trades,
statuses and unmergeable depth messages that arrive while the buffer is full. The last term is
what a consumer slower than the trade rate accumulates (Binance BTCUSDT peaks at ~2,000 trades/s,
~150 bytes each: ~20 MB per minute of lag); ``stats()`` shows it as ``queue_depth``.

Producers that can wait (a replay or the simulator running as fast as possible) use
``put_wait``: nothing is conflated, they block while the buffer is full.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from pipeline.features.l2book import DepthUpdate
from serving.events import Quote, Trade

log = logging.getLogger(__name__)

# FeedStatus states
CONNECTED = "connected"  # data flows (again) on a channel
DISCONNECTED = "disconnected"  # a channel's connection failed; a reconnect follows
RECONNECTING = "reconnecting"  # waiting out the backoff before resubscribing
GAP = "gap"  # depth updates were lost (sequence gap or reconnect): the book is invalid
RESYNCED = "resynced"  # a new snapshot and the diffs that chain onto it: the book is valid again
STALE = "stale"  # no message for longer than the stale limit
FAILED = "failed"  # an error that retrying cannot fix (bad symbol, bad credentials): the feed stops
ENDED = "ended"  # a finite feed (replay, fixed-length simulation) produced its last event
STATES = (CONNECTED, DISCONNECTED, RECONNECTING, GAP, RESYNCED, STALE, FAILED, ENDED)


class MarkPrice(NamedTuple):
    """Mark and index price with the current funding rate (Binance ``markPriceUpdate``)."""

    symbol: str
    ts_ns: int
    mark_px: float
    index_px: float
    funding_rate: float
    next_funding_ns: int | None


class DepthEvent(NamedTuple):
    """One raw depth message of a symbol: a snapshot or a diff with Binance's U/u/pu ids
    (``update.first_update_id``/``update_id``/``prev_update_id``); ``ts_ns`` is ``update.ts_ns``."""

    symbol: str
    ts_ns: int
    update: DepthUpdate


class FeedStatus(NamedTuple):
    """A change of a feed's state. ``symbol`` None: the whole feed. ``ts_ns`` is the feed's clock
    (wall time for live feeds, event time for replays)."""

    ts_ns: int
    symbol: str | None
    state: str
    detail: str


Event = Quote | Trade | MarkPrice | DepthEvent | FeedStatus

_QUOTE, _MARK, _DEPTH = 1, 2, 3


def _chains(older: DepthUpdate, newer: DepthUpdate) -> bool:
    """``newer`` is the diff right after ``older`` (futures: pu; spot: U = u + 1)."""
    if older.is_snapshot or newer.is_snapshot:
        return False
    if newer.prev_update_id >= 0:
        return newer.prev_update_id == older.update_id
    return newer.first_update_id == older.update_id + 1


def merge_diffs(older: DepthEvent, newer: DepthEvent) -> DepthEvent:
    """Two chained diffs as one: the book after it is the book after both."""
    a, b = older.update, newer.update
    levels = {(int(s), float(p)): float(q) for s, p, q in zip(a.side, a.price, a.qty, strict=True)}
    levels.update({(int(s), float(p)): float(q) for s, p, q in zip(b.side, b.price, b.qty, strict=True)})
    side = np.fromiter((s for s, _ in levels), dtype=np.int8, count=len(levels))
    price = np.fromiter((p for _, p in levels), dtype=np.float64, count=len(levels))
    qty = np.fromiter(levels.values(), dtype=np.float64, count=len(levels))
    update = DepthUpdate(b.ts_ns, b.update_id, False, side, price, qty, a.first_update_id, a.prev_update_id)
    return DepthEvent(newer.symbol, newer.ts_ns, update)


def _conflation_key(event: Any) -> tuple[str, int] | None:
    kind = type(event)
    if kind is Quote:
        return event.symbol, _QUOTE
    if kind is MarkPrice:
        return event.symbol, _MARK
    if kind is DepthEvent and not event.update.is_snapshot:
        return event.symbol, _DEPTH
    return None


class EventBuffer:
    """A bounded FIFO of events between one producer thread and one consumer (see module doc)."""

    def __init__(self, max_events: int = 10_000) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        self.max_events = max_events
        self._slots: deque[list[Any]] = deque()  # [event or None (taken out), key]
        self._waiting: dict[tuple[str, int], list[Any]] = {}  # newest slot per conflation key
        self._live = 0
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self.received = self.delivered = self.conflated = self.dropped = self.max_depth = 0

    def put(self, event: Event) -> bool:
        """Add an event; never blocks (conflates instead). False: the buffer is closed."""
        with self._cond:
            if self._closed:
                self.dropped += 1
                return False
            self.received += 1
            key = _conflation_key(event)
            if key is not None and self._live >= self.max_events:
                event = self._conflate(key, event)
            slot = [event, key]
            self._slots.append(slot)
            self._live += 1
            if key is not None:
                self._waiting[key] = slot
            if self._live > self.max_depth:
                self.max_depth = self._live
            if len(self._slots) > 2 * self._live + 1024:
                self._compact()
            self._cond.notify_all()
            return True

    def put_wait(self, event: Event, stop: threading.Event) -> bool:
        """Add an event, waiting while the buffer is full; False if ``stop`` was set or it closed."""
        with self._cond:
            while self._live >= self.max_events and not self._closed:
                if stop.is_set():
                    return False
                self._cond.wait(0.05)
        return self.put(event)

    def _conflate(self, key: tuple[str, int], event: Any) -> Any:
        slot = self._waiting.get(key)
        if slot is None or slot[0] is None:
            return event
        if key[1] == _DEPTH:
            if not _chains(slot[0].update, event.update):
                return event
            event = merge_diffs(slot[0], event)
        slot[0] = None  # taken out of its place; the newer one goes to the back
        self._live -= 1
        self.conflated += 1
        return event

    def _compact(self) -> None:
        self._slots = deque(slot for slot in self._slots if slot[0] is not None)

    def _pop(self) -> Any:
        while True:
            slot = self._slots.popleft()
            event, key = slot
            if event is None:
                continue
            self._live -= 1
            if key is not None and self._waiting.get(key) is slot:
                del self._waiting[key]
            self.delivered += 1
            return event

    def get(self, timeout_s: float | None = 0.0) -> Event | None:
        """The oldest event, waiting up to ``timeout_s`` (None: until one comes or it closes)."""
        with self._cond:
            if not self._live and timeout_s != 0.0:
                self._cond.wait_for(lambda: self._live or self._closed, timeout_s)
            if not self._live:
                return None
            event = self._pop()
            self._cond.notify_all()
            return event

    def drain(self, max_n: int = 1_000) -> list[Event]:
        """Up to ``max_n`` events, oldest first, without waiting."""
        with self._cond:
            out = [self._pop() for _ in range(min(max_n, self._live))]
            if out:
                self._cond.notify_all()
            return out

    def close(self) -> None:
        """Refuse new events (counted as dropped) and wake every waiter; buffered ones stay readable."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return self._live

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "received": self.received,
                "delivered": self.delivered,
                "conflated": self.conflated,
                "dropped": self.dropped,
                "queue_depth": self._live,
                "max_queue_depth": self.max_depth,
            }


# Feed-level counters every feed reports (zero where they cannot happen).
COUNTERS = ("reconnects", "disconnects", "gaps", "resyncs", "stale", "duplicates", "out_of_order", "filtered", "errors")


class Feed(ABC):
    """A producer thread filling an ``EventBuffer``.

    ``start()`` starts the thread (a daemon thread: it never keeps the process alive); ``stop()``
    asks it to end, waits up to ``timeout_s`` and closes the buffer: what was buffered stays
    readable, later events are dropped (counted). ``done`` is true once the producer has ended and
    everything was taken. An exception in the producer ends it with ``FeedStatus(failed)`` and
    sets ``error``.
    """

    name = "feed"

    def __init__(self, max_events: int = 10_000, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.buffer = EventBuffer(max_events)
        self.clock_ns = clock_ns
        self.wall_ns: Callable[[], int] = time.monotonic_ns  # pacing of replays and simulations
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the daemon's side ----

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} feed already started")
        self._prepare()
        self._thread = threading.Thread(target=self._main, name=f"feed-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._interrupt()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("%s feed: producer still running %.1f s after stop", self.name, timeout_s)
        self.buffer.close()

    def get(self, timeout_s: float | None = 0.0) -> Event | None:
        return self.buffer.get(timeout_s)

    def drain(self, max_n: int = 1_000) -> list[Event]:
        return self.buffer.drain(max_n)

    def stats(self) -> dict[str, int]:
        return {**self.buffer.stats(), **self.counters}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive() and not len(self.buffer)

    # ---- the producer's side ----

    def _prepare(self) -> None:
        """Work done by ``start()`` in the caller's thread, so bad input fails there (override)."""

    def _interrupt(self) -> None:
        """Wake the producer when ``stop()`` is called (override when it waits on something else)."""

    @abstractmethod
    def _produce(self) -> None:
        """Produce events until done or ``self._stopping`` is set."""

    def _main(self) -> None:
        try:
            self._produce()
        except Exception as exc:  # noqa: BLE001 - the daemon reads it from the status and ``error``
            self.error = f"{type(exc).__name__}: {exc}"
            self.counters["errors"] += 1
            log.exception("%s feed failed", self.name)
            self.status(None, FAILED, self.error)

    def emit(self, event: Event) -> bool:
        return self.buffer.put(event)

    def _play(self, stream: Iterable[tuple[int, Event]], speed: float | None, origin_ns: int) -> int:
        """Emit a recorded or simulated stream of (stream time, event). ``speed`` N: event time
        ``origin_ns + x`` is emitted ``x / N`` after the call, earlier times at once (the buffer
        conflates if the consumer falls behind, as live); None or 0: as fast as the consumer takes
        them (``put_wait``: nothing conflated). Returns how many were emitted before the end or stop."""
        stopping, wall_ns = self._stopping, self.wall_ns
        paced = bool(speed)
        start = wall_ns()
        emitted = 0
        for ts, event in stream:
            if paced:
                wait_ns = start + (ts - origin_ns) / speed - wall_ns()  # type: ignore[operator]
                if wait_ns > 500_000 and stopping.wait(wait_ns / 1e9):
                    break
                if stopping.is_set() or not self.buffer.put(event):
                    break
            elif not self.buffer.put_wait(event, stopping):
                break
            emitted += 1
        return emitted

    def status(self, symbol: str | None, state: str, detail: str = "", ts_ns: int | None = None) -> None:
        log.info("%s feed %s %s: %s", self.name, symbol or "*", state, detail)
        self.buffer.put(FeedStatus(self.clock_ns() if ts_ns is None else ts_ns, symbol, state, detail))
