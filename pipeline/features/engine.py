"""Online and batch feature computation over one definition.

``FeatureEngine`` is the serving side: one call per tick, the feature vector out. ``extract`` is the
training side: the same compiled step over arrays. Both start from an empty state; a feature is
*warm* once the history it declares (quotes, trades, events, seconds, depth updates) has been seen,
and only warm values may reach a model: ``extract`` marks rows, ``FeatureEngine.warm`` says when to
trust it. A depth feature on a symbol without depth never warms.

Depth: the engine keeps the symbol's L2 book (``pipeline.features.l2book``, the same code the batch
path replays the stored depth rows through) and takes the raw updates, ``on_depth``. Feed it as
Binance prescribes: a snapshot, then the diffs from the one straddling it (buffered while the
snapshot was fetched); after a gap, a new snapshot.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pandas as pd
from numba.core import types

from pipeline.features import core as c
from pipeline.features.catalog import Program, compile_program
from pipeline.features.core import KIND_DEPTH, KIND_QUOTE, KIND_TRADE, new_core
from pipeline.features.events import EventArrays
from pipeline.features.l2book import DepthUpdate, L2Book
from pipeline.features.step import run_batch, step

CHUNK_EVENTS = 200_000
SPLIT_FROM, MAX_WORKERS = 64, 4  # programs this large run in parallel parts
NAN = math.nan
# The warm-up counters, as ``run_program`` reports them after each emitted event and a Warmup
# declares them (plus its after_events and after_depth). Events are valid quotes and trades
# (ignored ticks do not count); depth, depth updates with a valid book (they are not events).
PROGRESS = ("quotes", "trades", "events", "seconds", "moves", "depth")
EVENTS = PROGRESS.index("events")
DEPTH = PROGRESS.index("depth")
_NO_SUMMARY = np.empty(0)


class FeatureEngine:
    """Tick-by-tick features for serving. Not thread-safe: one engine per symbol and thread."""

    def __init__(self, names: list[str] | tuple[str, ...]) -> None:
        self.program: Program = compile_program(names)
        self.names = self.program.names
        self._iprog, self._fprog = self.program.iprog, self.program.fprog
        self._state = self.program.new_state()
        self._core, self._clock = new_core()
        self.values = np.full(len(self.names), np.nan)
        self.book = L2Book()
        top = self.program.max_warmup()
        self._need = (top.quotes, top.trades, top.events, top.seconds, top.moves, top.depth)
        self._after = (top.after_events, top.after_depth)
        self._inputs_warm_at = (-1.0, -1.0)  # events and depth updates when every input was first warm
        self._warm = False
        self._step = _bound_step(self._iprog, self._fprog, self._state, self._core, self._clock, self.values)

    def on_quote(self, ts_ns: int, bid: float, bid_qty: float, ask: float, ask_qty: float) -> np.ndarray:
        self._step(self._iprog, self._fprog, self._state, self._core, self._clock, ts_ns, KIND_QUOTE,
                   NAN, NAN, 0.0, bid, bid_qty, ask, ask_qty, _NO_SUMMARY, self.values)
        if not self._warm:
            self._track_warmup()
        return self.values

    def on_trade(self, ts_ns: int, price: float, qty: float, side: float) -> np.ndarray:
        self._step(self._iprog, self._fprog, self._state, self._core, self._clock, ts_ns, KIND_TRADE,
                   price, qty, side, NAN, NAN, NAN, NAN, _NO_SUMMARY, self.values)
        if not self._warm:
            self._track_warmup()
        return self.values

    def on_depth(self, update: DepthUpdate) -> np.ndarray:
        """Apply a depth snapshot or diff to the book; the depth features move when it leaves a
        valid book (the others never do on a depth update)."""
        summary = self.book.apply(update)
        if summary is None:
            return self.values  # no valid book: ignored, as the batch path has no event for it
        self._step(self._iprog, self._fprog, self._state, self._core, self._clock, update.ts_ns, KIND_DEPTH,
                   NAN, NAN, 0.0, NAN, NAN, NAN, NAN, summary, self.values)
        if not self._warm:
            self._track_warmup()
        return self.values

    def update(self, tick) -> np.ndarray:
        """Fold one tick (anything with ``kind`` and the event fields, e.g. a replay event) or a
        ``DepthUpdate``."""
        if isinstance(tick, DepthUpdate):
            return self.on_depth(tick)
        if tick.kind == KIND_QUOTE:
            return self.on_quote(tick.ts_ns, tick.bid, tick.bid_qty, tick.ask, tick.ask_qty)
        if tick.kind == KIND_TRADE:
            return self.on_trade(tick.ts_ns, tick.price, tick.qty, tick.side)
        return self.values  # none of them: ignored, as the batch path ignores it

    def kernel_arrays(self) -> dict[str, np.ndarray]:
        """The arrays one quote's step reads and writes (the engine's own: a compiled caller that
        steps them, serving.runtime.quote_kernel, moves this engine)."""
        return {"iprog": self._iprog, "fprog": self._fprog, "state": self._state, "core": self._core,
                "clock": self._clock, "values": self.values, "no_summary": _NO_SUMMARY}

    @property
    def warm(self) -> bool:
        """Every feature has seen its warm-up (as ``warm_mask`` says of the same events); once
        warm, it stays warm."""
        return self._warm

    def _track_warmup(self) -> None:
        """After each tick until warm (a few hundred ns, then one attribute test per tick): the
        transforms' ``after_events`` count from the event where every input was warm."""
        core = self._core
        if self._inputs_warm_at[0] < 0.0:
            if not (
                core[c.N_QUOTES] >= self._need[0]
                and core[c.N_TRADES] >= self._need[1]
                and core[c.N_EVENTS] >= self._need[2]
                and core[c.T] >= self._need[3]
                and core[c.N_MOVES] >= self._need[4]
                and core[c.N_DEPTH] >= self._need[5]
            ):
                return
            self._inputs_warm_at = (core[c.N_EVENTS], core[c.N_DEPTH])
        self._warm = bool(core[c.N_EVENTS] - self._inputs_warm_at[0] >= self._after[0]
                          and core[c.N_DEPTH] - self._inputs_warm_at[1] >= self._after[1])


def _bound_step(iprog, fprog, state, core, clock, values):
    """``step`` compiled (or loaded from the cache) for the engine's argument types, called
    directly: the dispatcher resolves the types of all 16 arguments on every call, ~0.3 us of the
    ~1.3 us a tick costs with 25 features (bench/results/features.json). The engine always passes
    these types; ints and floats are converted as the dispatcher would."""
    scalars = (types.int64, types.int64) + (types.float64,) * 7
    arrays = tuple(numba.typeof(a) for a in (iprog, fprog, state, core, clock))
    return step.compile(arrays + scalars + (numba.typeof(_NO_SUMMARY), numba.typeof(values)))


def run_program(program: Program, events: EventArrays, emit: np.ndarray | None = None,
                workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Values after each emitted event ([len(emit), k]) and the warm-up counters at each.

    A large program is split into ``workers`` interleaved parts run in threads (the compiled loop
    releases the GIL); each part is the same definitions over the same events, so the values are
    those of one program. Default: one part per core (at most 4) from 64 features up."""
    emit = np.arange(len(events), dtype=np.int64) if emit is None else np.asarray(emit, dtype=np.int64)
    if workers is None:
        workers = min(os.cpu_count() or 1, MAX_WORKERS) if len(program.names) >= SPLIT_FROM else 1
    workers = min(workers, len(program.names))
    if workers > 1:
        return _run_split(program, events, emit, workers)
    out = np.full((len(emit), len(program.names)), np.nan)
    progress = np.zeros((len(emit), len(PROGRESS)))
    state = program.new_state()
    core, clock = new_core()
    values = np.full(len(program.names), np.nan)
    for start in range(0, max(len(events), 1), CHUNK_EVENTS):
        chunk = events.slice(start, start + CHUNK_EVENTS)
        lo, hi = np.searchsorted(emit, [start, start + len(chunk)])
        run_batch(program.iprog, program.fprog, state, core, clock, values, *chunk.columns(), chunk.depth_row,
                  chunk.depth, emit[lo:hi] - start, out[lo:hi], progress[lo:hi])
    return out, progress


def _run_split(program: Program, events: EventArrays, emit: np.ndarray, workers: int) -> tuple[np.ndarray, np.ndarray]:
    # Interleaved (every workers-th name), so that each part gets a share of every family's cost.
    parts = [compile_program(program.names[i::workers]) for i in range(workers)]
    with ThreadPoolExecutor(workers, thread_name_prefix="features") as pool:
        results = list(pool.map(lambda part: run_program(part, events, emit, workers=1), parts))
    out = np.empty((len(emit), len(program.names)))
    for i, (values, _) in enumerate(results):
        out[:, i::workers] = values
    return out, results[0][1]  # the warm-up counters are the core's: the same in every part


def warm_mask(program: Program, progress: np.ndarray, events: EventArrays | None = None) -> np.ndarray:
    """[rows, k] True where the feature has seen its declared warm-up.

    ``progress`` holds the counters (``PROGRESS``) after each row's event. A transform's
    ``after_events`` (``after_depth``) count events (depth updates) from the event where its input
    became warm: exactly, given ``events`` (the stream the rows were computed on, from its first
    event) or rows at every event; otherwise from the first row where the input is warm, so late,
    never early."""
    n = len(PROGRESS)
    warm = (progress[:, None, :n] >= program.warmup[None, :, :n]).all(axis=2)
    after = program.warmup[:, n:n + 2]  # after_events, after_depth
    if not after.any() or not len(progress):
        return warm
    inputs_warm_at = _inputs_warm_at(program, event_progress(events)) if events is not None else None
    for j in np.flatnonzero(after.any(axis=1)):
        if inputs_warm_at is not None:
            at = inputs_warm_at[j]
        else:
            first = int(np.argmax(warm[:, j]))
            at = progress[first, [EVENTS, DEPTH]] if warm[first, j] else np.full(2, np.inf)
        warm[:, j] &= (progress[:, EVENTS] - at[0] >= after[j, 0]) & (progress[:, DEPTH] - at[1] >= after[j, 1])
    return warm


def event_progress(events: EventArrays) -> np.ndarray:
    """The warm-up counters (``PROGRESS``) after every event of ``events``: the core only, no feature."""
    return run_program(compile_program(()), events)[1]


def _inputs_warm_at(program: Program, progress: np.ndarray) -> np.ndarray:
    """Per feature, the event and depth-update counts at which its input warm-up was first met
    ([k, 2], inf if never); ``progress`` is per event, and each counter only grows."""
    at = np.full((len(program.names), 2), np.inf)
    for j, need in enumerate(program.warmup[:, :len(PROGRESS)]):
        row = max(int(np.searchsorted(progress[:, m], need[m], side="left")) for m in range(len(PROGRESS)))
        if row < len(progress):
            at[j] = progress[row, [EVENTS, DEPTH]]
    return at


def extract(events: EventArrays, names: list[str] | tuple[str, ...], emit: np.ndarray | None = None) -> pd.DataFrame:
    """Features at each emitted event (default: every event), with ``ts_ns`` and ``warm`` (all
    features warm). Values before warm-up are kept but must not be trained on."""
    program = compile_program(names)
    emit = np.arange(len(events), dtype=np.int64) if emit is None else np.asarray(emit, dtype=np.int64)
    out, progress = run_program(program, events, emit)
    frame = pd.DataFrame(out, columns=list(program.names))
    frame.insert(0, "ts_ns", events.ts_ns[emit])
    frame["warm"] = warm_mask(program, progress, events).all(axis=1)
    return frame
