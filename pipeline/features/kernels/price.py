"""Returns, volatility and range kernels on the mid price."""

from __future__ import annotations

import math

from numba import njit

from pipeline.features import core as c
from pipeline.features.kernels.ew import NAN, alpha, decay, ew_update, ew_value, ratio, ring_oldest, ring_push

LN2x4 = 4.0 * math.log(2.0)


@njit(cache=True, inline="always")
def ret_tick(state, off, w, core):
    """Log-mid return over the last w quote updates. State: ring of w + 1 log mids."""
    n = int(w) + 1
    if core[c.IS_QUOTE] > 0.0:
        ring_push(state, off, n, core[c.LOG_MID])
    if core[c.HAS_BOOK] == 0.0:
        return NAN
    return core[c.LOG_MID] - ring_oldest(state, off, n)


@njit(cache=True, inline="always")
def ret_time(state, off, w, core):
    """Log mid minus its time-EW average (time constant w seconds). State: [avg, init]."""
    if core[c.HAS_BOOK] == 0.0:
        return NAN
    if state[off + 1] == 0.0:
        state[off] = core[c.LOG_MID]
        state[off + 1] = 1.0
    else:
        d = decay(core[c.DT], w)
        state[off] = d * state[off] + (1.0 - d) * core[c.LOG_MID]
    return core[c.LOG_MID] - state[off]


@njit(cache=True, inline="always")
def rv_tick(state, off, w, core):
    """Realised volatility: sqrt of the EW mean squared quote-update return (span w)."""
    if core[c.IS_QUOTE] > 0.0 and core[c.N_QUOTES] > 1.0:
        ew_update(state, off, core[c.RET] * core[c.RET], alpha(w))
    return math.sqrt(ew_value(state, off))


@njit(cache=True, inline="always")
def rv_time(state, off, w, core):
    """Realised volatility per sqrt(second): sqrt(time-decayed sum of r^2 / w). State: [sum, init]."""
    if core[c.HAS_BOOK] == 0.0:
        return NAN
    state[off] = state[off] * decay(core[c.DT], w) + core[c.RET] * core[c.RET]
    return math.sqrt(state[off] / w)


@njit(cache=True, inline="always")
def tickvol_tick(state, off, w, core):
    """EW mean absolute mid change per quote update, in basis points (span w)."""
    if core[c.IS_QUOTE] > 0.0 and core[c.N_QUOTES] > 1.0:
        ew_update(state, off, abs(core[c.RET]) * 1e4, alpha(w))
    return ew_value(state, off)


@njit(cache=True, inline="always")
def atr_tick(state, off, w, core):
    """Average true range of trade prices, relative: EW mean |p_t - p_{t-1}| / p_t (span w trades)."""
    if core[c.IS_TRADE] > 0.0 and core[c.N_TRADES] > 1.0:
        ew_update(state, off, abs(core[c.TRADE_PX] - core[c.PREV_TRADE_PX]) / core[c.TRADE_PX], alpha(w))
    return ew_value(state, off)


@njit(cache=True, inline="always")
def park_tick(state, off, w, core):
    """Parkinson range volatility over the last w quote updates: sqrt(ln(H/L)^2 / (4 ln 2)).

    H and L come from monotone deques (amortised O(1)). State: [head_max, len_max, head_min,
    len_min, counter] + max deque (index, value) pairs + min deque pairs, each of capacity w.
    """
    n = int(w)
    if core[c.IS_QUOTE] > 0.0:
        x = core[c.LOG_MID]
        k = state[off + 4]
        state[off + 4] = k + 1.0
        base_max = off + 5
        base_min = off + 5 + 2 * n
        for which in range(2):
            base = base_max if which == 0 else base_min
            h = off + 2 * which
            head = int(state[h])
            length = int(state[h + 1])
            # Drop the front if it left the window.
            if length > 0 and state[base + 2 * head] <= k - n:
                head = (head + 1) % n
                length -= 1
            # Drop dominated values from the back.
            while length > 0:
                back = (head + length - 1) % n
                v = state[base + 2 * back + 1]
                if (which == 0 and v <= x) or (which == 1 and v >= x):
                    length -= 1
                else:
                    break
            slot = (head + length) % n
            state[base + 2 * slot] = k
            state[base + 2 * slot + 1] = x
            state[h] = head
            state[h + 1] = length + 1
    if state[off + 1] == 0.0:
        return NAN
    high = state[off + 5 + 2 * int(state[off]) + 1]
    low = state[off + 5 + 2 * n + 2 * int(state[off + 2]) + 1]
    return math.sqrt((high - low) * (high - low) / LN2x4)


@njit(cache=True, inline="always")
def autocorr_tick(state, off, w, core):
    """EW first-order autocorrelation of quote-update returns (span w). State: [r*r_prev, r^2, prev r]."""
    if core[c.IS_QUOTE] > 0.0 and core[c.N_QUOTES] > 1.0:
        a = alpha(w)
        r = core[c.RET]
        ew_update(state, off, r * state[off + 4], a)
        ew_update(state, off + 2, r * r, a)
        state[off + 4] = r
    return ratio(ew_value(state, off), ew_value(state, off + 2))
