"""Follow the registry's ``champion`` and swap a newly promoted version in while trading.

``ChampionWatcher`` polls the alias in a background thread. When it names another version, the
thread loads it (``load_runtime``), warms it on the daemon's recent events (``RecentTicks``) and
keeps it following the stream until its features are warm and its P(up) is defined, then offers
it. The daemon takes it at a tick boundary (``swap_ready``), which first feeds it the few events
that arrived since the offer: no tick is dropped or seen twice, nothing restarts, and the swap is
logged with the old and new version.

With no model trading (the daemon's start), the champion is offered as soon as it has replayed
the ring, warm or not: ``build``-time ``poll_once()`` then ``swap_ready()`` returns at once even
with an empty ring, and the model warms on the live stream (``ok`` False until then).

A failed load (unreachable tracking store, missing or corrupt artefact) keeps the model that is
trading, sets ``alert`` to the reason and retries with exponential backoff; a later success or the
alias going back to the trading version clears it.

The daemon's loop, per market event::

    runtime = watcher.swap_ready() or runtime    # at the tick boundary, before the event
    recent.append(event)
    vector, p_up, ok = runtime.on_quote(event)   # (on_trade / on_depth for the others)

Cost to the trading thread: ``recent.append`` ~0.08 us, ``swap_ready`` ~0.03 us with nothing
offered. The loading thread shares the GIL: reading the artefacts (the compiled arrays: no model
library is imported), a numba compile on a cold cache and the warm-up replay are Python, which can
hold a tick for up to the interpreter's switch interval (5 ms); the replay yields the GIL every
``YIELD_EVERY`` events. Measured (bench/results/runtime.json, 2 busy cores): tick latency p99
43 us while a 500-tree champion loaded and warmed on 150k events (40 us idle), worst 122 us.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pipeline.config import TrackingConfig
from pipeline.errors import AutoscalpError
from pipeline.training import aliases, tracking
from serving.config import EngineConfig
from serving.runtime.model import ModelRuntime, load_runtime

log = logging.getLogger(__name__)

YIELD_EVERY = 64  # replayed events between GIL yields (~1 ms of replay at most)
FOLLOW_S = 0.05  # how often a warming model looks for new events
DEFAULT_STRIDE = 10  # the sampling grid of versions registered before it was tagged


class ModelLoadError(AutoscalpError):
    """A registered version could not be loaded into a runtime."""


class RecentTicks:
    """The daemon's last ``maxlen`` market events, numbered from 1, in a preallocated ring (an append
    allocates nothing: ~0.1 us). One thread appends (the daemon); others read with ``since``. Size it
    to cover the features' warm-up (the largest ``quotes``, ``trades`` or ``events`` of
    ``Program.max_warmup()``, with room): a model whose warm-up the ring does not cover follows the
    live stream until warm before it is offered."""

    def __init__(self, maxlen: int = 200_000) -> None:
        self.maxlen = maxlen
        self._ring: list[Any] = [None] * maxlen
        self.seq = 0  # the number of the latest event; event k lives at _ring[(k - 1) % maxlen]

    def append(self, event: Any) -> None:
        seq = self.seq
        self._ring[seq % self.maxlen] = event
        self.seq = seq + 1  # published after the write: a reader never sees a number before its event

    def since(self, seen: int) -> tuple[list[Any], int, bool]:
        """(the events after event ``seen`` (0: all kept), oldest first; the number of the last one;
        whether none between were dropped from the ring)."""
        n = self.maxlen
        while True:
            newest = self.seq
            start = max(seen + 1, newest - n + 1, 1)
            count = newest - start + 1
            if count <= 0:
                return [], max(seen, newest), True
            i = (start - 1) % n
            ring = self._ring
            events = ring[i:i + count] if i + count <= n else ring[i:] + ring[:count - (n - i)]
            if self.seq - n < start:  # nothing copied was overwritten meanwhile
                return events, newest, seen == 0 or start == seen + 1


class ChampionWatcher:
    """The registry's ``alias`` for one symbol, followed: ``start`` polls it every ``poll_s`` in a
    thread (``poll_once`` may be called before ``start``, never beside the thread); the trading
    thread calls ``swap_ready`` between events. ``serving`` is the runtime trading now, ``alert``
    why a newer champion is not (None when all is well), ``model_age_s`` its age."""

    def __init__(self, symbol: str, tracking_config: TrackingConfig, poll_s: float = 30.0, *,
                 engine_config: EngineConfig | None = None, recent: RecentTicks | None = None,
                 current: ModelRuntime | None = None, default_stride: int = DEFAULT_STRIDE,
                 backoff_s: tuple[float, float] = (1.0, 60.0), alias: str = aliases.CHAMPION,
                 clock: Callable[[], float] = time.time,
                 loader: Callable[..., ModelRuntime] = load_runtime) -> None:  # fmt: skip
        self.symbol = symbol
        self.tracking = tracking_config
        self.poll_s = poll_s
        self.engine_config = engine_config or EngineConfig()
        self.recent = recent if recent is not None else RecentTicks()
        self.serving: ModelRuntime | None = current  # what the daemon trades with (set on its thread)
        self.default_stride = default_stride
        self.backoff_s = backoff_s
        self.alias = alias
        self.clock = clock
        self.loader = loader
        self.alert: str | None = None
        self.failures = 0
        self.last_poll_ok: float | None = None  # clock() of the last successful registry poll
        self.last_swap: dict[str, Any] | None = None
        self.warming: int | None = None  # the version being loaded or warmed
        self._ready: tuple[ModelRuntime, int] | None = None  # offered: (runtime, last event it saw)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the daemon's side ----------------------------------------------------------------------

    def swap_ready(self) -> ModelRuntime | None:
        """The new runtime, caught up to the latest event, if one is offered; else None. Call it on
        the trading thread between two events."""
        if self._ready is None:
            return None
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is None:
            return None
        runtime, seen = ready
        missed, _, complete = self.recent.since(seen)
        if not complete:  # the ring overran it: warm it again (the next poll reloads)
            log.warning("%s: events dropped from the ring before the swap; warming again", runtime.version_label)
            return None
        for event in missed:
            runtime.update(event)
        old = self.serving
        self.serving = runtime
        self.last_swap = {"at": self.clock(), "from": _version(old), "to": _version(runtime),
                          "caught_up_events": len(missed)}  # fmt: skip
        log.info("champion swap for %s: %s -> %s at event %d (%d events caught up at the swap)", self.symbol,
                 old.version_label if old else "no model", runtime.version_label, self.recent.seq,
                 len(missed))  # fmt: skip
        return runtime

    def model_age_s(self) -> float | None:
        """Seconds since the trading version was registered (None without one)."""
        version = self.serving.version if self.serving is not None else None
        if version is None or version.created_ms is None:
            return None
        return self.clock() - version.created_ms / 1e3

    def status(self) -> dict[str, Any]:
        """For /health: the trading version, its age, the alert, what is warming or offered."""
        ready = self._ready
        return {
            "alias": self.alias,
            "version": _version(self.serving),
            "model": self.serving.version_label if self.serving is not None else "no model",
            "age_s": self.model_age_s(),
            "alert": self.alert,
            "warming": self.warming,
            "offered": _version(ready[0]) if ready else None,
            "last_poll_age_s": self.clock() - self.last_poll_ok if self.last_poll_ok is not None else None,
            "last_swap": self.last_swap,
        }

    # ---- the background thread ------------------------------------------------------------------

    def start(self) -> ChampionWatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"champion-watcher {self.symbol}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            delay = self.poll_s
            try:
                self.poll_once()
                self.failures = 0
            except Exception as exc:  # noqa: BLE001 (any failure: keep trading the last good model)
                self.failures += 1
                low, high = self.backoff_s
                delay = min(low * 2 ** (self.failures - 1), high)
                self.alert = (f"{_reason(exc)}; still trading {self._serving_label()} "
                              f"(retry {self.failures} in {delay:g} s)")
                log.warning("champion watcher %s: %s", self.symbol, self.alert)
            finally:
                self.warming = None
            self._stop.wait(delay)

    def poll_once(self) -> None:
        """One look at the alias; loads, warms and offers a new champion. Raises when the registry
        cannot be read or the version cannot be loaded (``_run`` turns that into ``alert``)."""
        tracking.connect(self.tracking)
        info = aliases.find(self.symbol, self.alias)
        self.last_poll_ok = self.clock()
        if info is None:
            self.alert = f"no @{self.alias} in the registry; still trading {self._serving_label()}"
            return
        if _version(self.serving) == info.version:
            with self._lock:
                self._ready = None  # an offer the alias moved away from again (a rollback) is withdrawn
            self.alert = None
            return
        ready = self._ready
        if ready is not None and _version(ready[0]) == info.version:
            return  # offered, waiting for the daemon's next tick
        self.warming = info.version
        try:
            runtime = self.loader(info, self.engine_config, self.default_stride)
        except Exception as exc:
            raise ModelLoadError(f"{info.name} v{info.version} failed to load ({_reason(exc)})") from exc
        warmed = self._warm(runtime)
        if warmed is None:
            return  # stopping
        runtime, seen = warmed
        with self._lock:
            self._ready = (runtime, seen)
        self.alert = None
        log.info("%s warmed on %d recent events and offered for the swap", runtime.version_label, seen)

    def _warm(self, runtime: ModelRuntime) -> tuple[ModelRuntime, int] | None:
        """Replay the ring, then follow new events until the runtime's last quote was ok (at once
        when no model trades); returns it (restarted if it fell behind the ring) and the number of
        the last event it saw, or None when stopping."""
        seen = 0
        while not self._stop.is_set():
            events, last, complete = self.recent.since(seen)
            if not complete:  # fell behind the ring: start again from what it holds
                runtime = runtime.restarted()
                seen = 0
                continue
            for i, event in enumerate(events, 1):
                runtime.update(event)
                if i % YIELD_EVERY == 0:
                    time.sleep(1e-5)  # let the trading thread take the GIL
            seen = last
            # caught up, and warm; or nothing trades yet (no model is no better than a cold one,
            # which warms on the live stream like any model at a start)
            if (runtime.last_ok or self.serving is None) and len(events) < YIELD_EVERY:
                return runtime, seen
            if not events:
                self._stop.wait(FOLLOW_S)
        return None

    def _serving_label(self) -> str:
        return self.serving.version_label if self.serving is not None else "no model"


def _version(runtime: ModelRuntime | None) -> int | None:
    return runtime.version.version if runtime is not None and runtime.version is not None else None


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]
