"""``LoopedReplayFeed``: a recorded stream played over and over, N times faster than it was
recorded, for as long as asked: a load generator with a real market's message mix and burstiness.

Each lap's timestamps are shifted by the recording's span (plus 1 ms), so event time keeps
increasing across laps; the first lap starts at ``start_ns`` (default: the wall clock when the
feed starts). Pacing is in wall time: the event ``x`` ns after the first one is offered
``x / speed`` ns after the start (earlier ones at once), into the same conflating buffer a live
feed uses, so a consumer that falls behind gets its quotes conflated and every trade kept.
``offered`` counts what the buffer took, per kind: what a load test checks the daemon received.

``prime_events``: that many events first, as fast as the consumer takes them (``put_wait``:
nothing conflated), e.g. to warm the features (the engine's longest windows need ~6,000 mid moves:
three laps of the BTCUSDT capture) before the paced run. The paced run starts once the consumer
has taken them all (no backlog to conflate); ``primed`` is set then, and ``duration_s`` counts
from there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from pipeline.features.events import EventArrays
from serving.events import Quote, Trade
from serving.feeds.base import CONNECTED, ENDED, Event, Feed
from serving.feeds.replay import stream_events

_LAP_GAP_NS = 1_000_000


class LoopedReplayFeed(Feed):
    """``events``: one symbol's merged trades and quotes (``pipeline.features.events``), e.g. a
    raw capture read by ``FileSource`` and ``events_from_batches``. ``speed`` N: N x the recorded
    message rate. ``duration_s``: wall time before the feed ends (None: until ``stop()``)."""

    name = "looped-replay"

    def __init__(self, symbol: str, events: EventArrays, speed: float, duration_s: float | None = None,
                 start_ns: int | None = None, prime_events: int = 0, max_events: int = 10_000,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:  # fmt: skip
        super().__init__(max_events, clock_ns)
        if not len(events):
            raise ValueError("LoopedReplayFeed needs a non-empty stream")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.symbol, self.events, self.speed, self.duration_s = symbol, events, speed, duration_s
        self.start_ns, self.prime_events = start_ns, prime_events
        self.primed = threading.Event()
        self.span_ns = int(events.ts_ns[-1] - events.ts_ns[0]) + _LAP_GAP_NS
        self.offered = {"quotes": 0, "trades": 0}
        self.laps = 0

    def _laps(self, first_ns: int) -> Iterator[tuple[int, Event]]:
        base = int(self.events.ts_ns[0])
        while True:
            shift = first_ns - base + self.laps * self.span_ns
            for ts, event in stream_events(self.symbol, self.events):
                yield ts + shift, event._replace(ts_ns=event.ts_ns + shift)
            self.laps += 1

    def _produce(self) -> None:
        first_ns = self.start_ns if self.start_ns is not None else self.clock_ns()
        self.status(None, CONNECTED, f"{len(self.events)} events a lap, x{self.speed:g}", ts_ns=first_ns)
        stopping, wall_ns, speed, offered, buffer = self._stopping, self.wall_ns, self.speed, self.offered, self.buffer
        laps = self._laps(first_ns)
        last_ts = first_ns
        for _, (ts, event) in zip(range(self.prime_events), laps):
            if not buffer.put_wait(event, stopping):
                return
            offered[_KINDS.get(type(event), "other")] += 1
            last_ts = ts
        while len(buffer) and not stopping.wait(0.005):
            pass
        self.primed.set()
        start, origin = wall_ns(), last_ts
        deadline = start + int(self.duration_s * 1e9) if self.duration_s is not None else None
        for ts, event in laps:
            due = start + (ts - origin) / speed
            if deadline is not None and due >= deadline:
                break
            wait_ns = due - wall_ns()
            if wait_ns > 500_000 and stopping.wait(wait_ns / 1e9):
                return
            if stopping.is_set() or not buffer.put(event):
                return
            offered[_KINDS.get(type(event), "other")] += 1
            last_ts = ts
        self.status(None, ENDED, f"{sum(offered.values())} events offered in {self.laps} laps", ts_ns=last_ts)


_KINDS = {Trade: "trades", Quote: "quotes"}
