"""Building blocks: exponentially weighted averages (by count and by time) and ring buffers."""

from __future__ import annotations

import math

from numba import njit

NAN = math.nan


@njit(cache=True, inline="always")
def alpha(span: float) -> float:
    """Weight of a new value in an EW average whose span is ``span`` updates (pandas' convention)."""
    return 2.0 / (span + 1.0)


@njit(cache=True, inline="always")
def ew_update(state, i, x, a):
    """EW average in state[i] with its initialised flag in state[i + 1]; returns the new average."""
    if state[i + 1] == 0.0:
        state[i] = x
        state[i + 1] = 1.0
    else:
        state[i] += a * (x - state[i])
    return state[i]


@njit(cache=True, inline="always")
def ew_value(state, i):
    return state[i] if state[i + 1] != 0.0 else NAN


@njit(cache=True, inline="always")
def decay(dt, tau):
    return math.exp(-dt / tau)


@njit(cache=True, inline="always")
def ratio(num, den):
    """num / den, 0 where the denominator vanishes (a flat market has no imbalance, no z-score).

    NaN in, NaN out: an indicator that has not seen its inputs yet stays NaN (not warm).
    """
    if math.isnan(num) or math.isnan(den):
        return NAN
    if den > 1e-300 or den < -1e-300:
        return num / den
    return 0.0


# Ring buffer of capacity n at state[i:]: [position, count, values...]; size n + 2.
@njit(cache=True, inline="always")
def ring_push(state, i, n, x):
    """Append x; returns the value that fell out (NaN while the buffer is filling)."""
    pos = int(state[i])
    slot = i + 2 + pos
    dropped = state[slot] if state[i + 1] >= n else NAN
    state[slot] = x
    state[i] = (pos + 1) % n
    if state[i + 1] < n:
        state[i + 1] += 1.0
    return dropped


@njit(cache=True, inline="always")
def ring_oldest(state, i, n):
    """The oldest value held (NaN if empty)."""
    count = int(state[i + 1])
    if count == 0:
        return NAN
    if count < n:
        return state[i + 2]
    return state[i + 2 + int(state[i])]


@njit(cache=True, inline="always")
def ring_count(state, i):
    return state[i + 1]
