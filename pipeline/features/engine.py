"""Online and batch feature computation over one definition.

``FeatureEngine`` is the serving side: one call per tick, the feature vector out. ``extract`` is the
training side: the same compiled step over arrays. Both start from an empty state; a feature is
*warm* once the history it declares (quotes, trades, events, seconds) has been seen, and only warm
values may reach a model: ``extract`` marks rows, ``FeatureEngine.warm`` says when to trust it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.features import core as c
from pipeline.features.catalog import Program, compile_program
from pipeline.features.core import KIND_QUOTE, KIND_TRADE, new_core
from pipeline.features.events import EventArrays
from pipeline.features.step import run_batch, step

CHUNK_EVENTS = 200_000


class FeatureEngine:
    """Tick-by-tick features for serving. Not thread-safe: one engine per symbol and thread."""

    def __init__(self, names: list[str] | tuple[str, ...]) -> None:
        self.program: Program = compile_program(names)
        self.names = self.program.names
        self._iprog, self._fprog = self.program.iprog, self.program.fprog
        self._state = self.program.new_state()
        self._core, self._clock = new_core()
        self.values = np.full(len(self.names), np.nan)
        top = self.program.max_warmup()
        self._need = (top.quotes, top.trades, top.events, top.seconds)

    def on_quote(self, ts_ns: int, bid: float, bid_qty: float, ask: float, ask_qty: float) -> np.ndarray:
        step(self._iprog, self._fprog, self._state, self._core, self._clock, ts_ns, KIND_QUOTE,
             np.nan, np.nan, 0.0, bid, bid_qty, ask, ask_qty, self.values)
        return self.values

    def on_trade(self, ts_ns: int, price: float, qty: float, side: float) -> np.ndarray:
        step(self._iprog, self._fprog, self._state, self._core, self._clock, ts_ns, KIND_TRADE,
             price, qty, side, np.nan, np.nan, np.nan, np.nan, self.values)
        return self.values

    def update(self, tick) -> np.ndarray:
        """Fold one tick (anything with ``kind`` and the event fields, e.g. a replay event)."""
        if tick.kind == KIND_QUOTE:
            return self.on_quote(tick.ts_ns, tick.bid, tick.bid_qty, tick.ask, tick.ask_qty)
        return self.on_trade(tick.ts_ns, tick.price, tick.qty, tick.side)

    @property
    def warm(self) -> bool:
        core = self._core
        return (
            core[c.N_QUOTES] >= self._need[0]
            and core[c.N_TRADES] >= self._need[1]
            and core[c.N_EVENTS] >= self._need[2]
            and core[c.T] >= self._need[3]
        )


def run_program(program: Program, events: EventArrays, emit: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Values after each emitted event ([len(emit), k]) and the warm-up counters at each."""
    emit = np.arange(len(events), dtype=np.int64) if emit is None else np.asarray(emit, dtype=np.int64)
    out = np.full((len(emit), len(program.names)), np.nan)
    progress = np.zeros((len(emit), 4))
    state = program.new_state()
    core, clock = new_core()
    values = np.full(len(program.names), np.nan)
    for start in range(0, max(len(events), 1), CHUNK_EVENTS):
        chunk = events.slice(start, start + CHUNK_EVENTS)
        lo, hi = np.searchsorted(emit, [start, start + len(chunk)])
        run_batch(program.iprog, program.fprog, state, core, clock, values, *chunk.columns(),
                  emit[lo:hi] - start, out[lo:hi], progress[lo:hi])
    return out, progress


def warm_mask(program: Program, progress: np.ndarray) -> np.ndarray:
    """[rows, k] True where the feature has seen its declared warm-up."""
    return (progress[:, None, :] >= program.warmup[None, :, :]).all(axis=2)


def extract(events: EventArrays, names: list[str] | tuple[str, ...], emit: np.ndarray | None = None) -> pd.DataFrame:
    """Features at each emitted event (default: every event), with ``ts_ns`` and ``warm`` (all
    features warm). Values before warm-up are kept but must not be trained on."""
    program = compile_program(names)
    emit = np.arange(len(events), dtype=np.int64) if emit is None else np.asarray(emit, dtype=np.int64)
    out, progress = run_program(program, events, emit)
    frame = pd.DataFrame(out, columns=list(program.names))
    frame.insert(0, "ts_ns", events.ts_ns[emit])
    frame["warm"] = warm_mask(program, progress).all(axis=1)
    return frame
