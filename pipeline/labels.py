"""Fee-aware triple-barrier labels on the mid price (López de Prado, *Advances in Financial ML*, ch. 3).

For an entry at event ``i`` (at the mid after event i, the book the features at i have seen):

- costs = 2 x the taker fee per side, plus half the spread at entry (a taker crosses it);
- upper barrier ``mid_i * (1 + tp + costs)``, lower barrier ``mid_i * (1 - sl - costs)``;
- the time barrier is ``horizon_events`` events after i, or the last event within
  ``horizon_seconds`` of ``ts_i``.

Label +1 when the mid reaches the upper barrier first (a long would have taken ``tp`` net of costs),
-1 when it reaches the lower one first (with tp == sl: a short would have), 0 at the time barrier.
``fwd_return`` is the gross mid return from entry to the exit event.

Labels read only the future: events strictly after i, up to the time barrier. A row whose time
barrier lies beyond the data seen is *incomplete*: its label is unknown and it must be dropped
(keeping it only when a barrier was hit would over-represent +/-1 at the end of the data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from pipeline.config import LabelConfig
from pipeline.features.core import KIND_QUOTE
from pipeline.features.events import EventArrays

BPS = 1e-4
LONG_WINS, SHORT_WINS, TIMED_OUT = 1, -1, 0


@dataclass(frozen=True)
class Labels:
    label: np.ndarray  # int8: +1, -1, 0 (0 also where incomplete)
    fwd_return: np.ndarray  # float64: mid_exit / mid_entry - 1 (NaN where incomplete)
    exit_index: np.ndarray  # int64: the event at which the position is closed
    exit_ts_ns: np.ndarray  # int64: its time (for purging overlapping labels in walk-forward splits)
    complete: np.ndarray  # bool: the whole horizon was observed and the entry had a book


def mid_path(events: EventArrays) -> tuple[np.ndarray, np.ndarray]:
    """The mid and the half spread after each event (last valid quote carried forward; NaN before).

    A quote counts when the feature core would accept it (pipeline.features.core.update_core):
    positive finite prices, bid < ask, non-negative finite sizes.
    """
    bid, ask = events.bid, events.ask
    with np.errstate(invalid="ignore"):
        valid = (
            (events.kind == KIND_QUOTE)
            & np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (bid < ask)
            & np.isfinite(events.bid_qty) & np.isfinite(events.ask_qty)
            & (events.bid_qty >= 0) & (events.ask_qty >= 0)
        )
    last = np.maximum.accumulate(np.where(valid, np.arange(len(events)), -1)) if len(events) else np.empty(0, int)
    mid = np.where(last >= 0, 0.5 * (bid + ask)[last], np.nan)
    half_spread = np.where(last >= 0, 0.5 * (ask - bid)[last], np.nan)
    return mid, half_spread


def time_barrier(events: EventArrays, at: np.ndarray, config: LabelConfig) -> np.ndarray:
    """Index of the event at the time barrier of each entry (may lie beyond the data)."""
    if config.horizon_events is not None:
        return at + config.horizon_events
    horizon_ns = int(round(config.horizon_seconds * 1e9))
    return np.searchsorted(events.ts_ns, events.ts_ns[at] + horizon_ns, side="right") - 1


def horizon_complete(
    events: EventArrays, at: np.ndarray, config: LabelConfig, known_until_ns: int | None = None
) -> np.ndarray:
    """True where the stream was observed up to the time barrier.

    ``known_until_ns``: the stream is known to be complete up to this time (default: its last event);
    pass the end of the read window when later data exists but was not read.
    """
    if config.horizon_events is not None:
        return at + config.horizon_events < len(events)
    if len(events) == 0:
        return np.zeros(len(at), dtype=bool)
    known = int(events.ts_ns[-1]) if known_until_ns is None else known_until_ns
    return events.ts_ns[at] + int(round(config.horizon_seconds * 1e9)) <= known


def costs_fraction(half_spread: np.ndarray, mid: np.ndarray, config: LabelConfig) -> np.ndarray:
    """Round-trip taker fees plus (optionally) half the entry spread, as a fraction of the mid."""
    fees = 2.0 * config.fee_bps_per_side * BPS
    return fees + (half_spread / mid if config.include_half_spread else 0.0)


def triple_barrier(
    events: EventArrays, at: np.ndarray, config: LabelConfig, known_until_ns: int | None = None
) -> Labels:
    """Labels for entries at the (sorted or not) event indices ``at``."""
    at = np.asarray(at, dtype=np.int64)
    mid, half_spread = mid_path(events)
    entry = mid[at]
    costs = costs_fraction(half_spread[at], entry, config)
    upper = entry * (1.0 + config.tp_bps * BPS + costs)
    lower = entry * (1.0 - config.sl_bps * BPS - costs)
    end = np.minimum(time_barrier(events, at, config), len(events) - 1)
    label, exit_index = _first_touch(mid, at, end, upper, lower)
    complete = horizon_complete(events, at, config, known_until_ns) & np.isfinite(entry)
    fwd_return = np.where(complete, mid[exit_index] / entry - 1.0, np.nan)
    return Labels(
        label=np.where(complete, label, TIMED_OUT).astype(np.int8),
        fwd_return=fwd_return,
        exit_index=exit_index,
        exit_ts_ns=events.ts_ns[exit_index],
        complete=complete,
    )


@njit(cache=True)
def _first_touch(mid, at, end, upper, lower):
    """The first event strictly after each entry (up to its time barrier) where the mid touches a
    barrier: (+1 / -1 / 0, exit index). A NaN mid (no book yet) touches nothing."""
    n = at.shape[0]
    label = np.zeros(n, dtype=np.int8)
    exit_index = np.empty(n, dtype=np.int64)
    for r in range(n):
        i = at[r]
        exit_index[r] = max(end[r], i)
        if math.isnan(upper[r]):
            continue
        for j in range(i + 1, end[r] + 1):
            if mid[j] >= upper[r]:
                label[r] = 1
                exit_index[r] = j
                break
            if mid[j] <= lower[r]:
                label[r] = -1
                exit_index[r] = j
                break
    return label, exit_index
