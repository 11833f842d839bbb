"""Activity kernels: arrival rates, inter-arrival times, time since the last large trade."""

from __future__ import annotations

import math

from numba import njit

from pipeline.features import core as c
from pipeline.features.kernels.ew import NAN, alpha, decay, ew_update, ew_value

LARGE_TRADE_SPAN = 500.0  # trades in the EW mean size that "large" is measured against


@njit(cache=True, inline="always")
def traderate_time(state, off, w, core):
    """Trades per second, time-decayed with time constant w seconds."""
    state[off] = state[off] * decay(core[c.DT], w) + core[c.IS_TRADE]
    return state[off] / w


@njit(cache=True, inline="always")
def quoterate_time(state, off, w, core):
    """Book updates per second, time-decayed with time constant w seconds."""
    state[off] = state[off] * decay(core[c.DT], w) + core[c.IS_QUOTE]
    return state[off] / w


@njit(cache=True, inline="always")
def iat_tick(state, off, w, core):
    """EW mean inter-arrival time between trades, in seconds (span w trades)."""
    if core[c.IS_TRADE] > 0.0 and core[c.N_TRADES] > 1.0:
        ew_update(state, off, core[c.TRADE_DT], alpha(w))
    return ew_value(state, off)


@njit(cache=True, inline="always")
def sincelarge(state, off, w, core):
    """log(1 + seconds since the last trade larger than w x the EW mean trade size).

    State: [EW mean size, init, time of the last large trade, seen one]."""
    if core[c.IS_TRADE] > 0.0:
        mean = ew_value(state, off)
        if not math.isnan(mean) and core[c.TRADE_QTY] > w * mean:
            state[off + 2] = core[c.T]
            state[off + 3] = 1.0
        ew_update(state, off, core[c.TRADE_QTY], alpha(LARGE_TRADE_SPAN))
    if state[off + 1] == 0.0:
        return NAN
    since = core[c.T] - state[off + 2] if state[off + 3] > 0.0 else core[c.T]
    return math.log1p(since)
