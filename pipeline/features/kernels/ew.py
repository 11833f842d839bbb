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
def ew_mean_var_update(state, i, x, a):
    """EW mean in state[i] (initialised flag in state[i + 1]) and EW variance in state[i + 2].

    West's (1979) update: the same numbers as E[x^2] - E[x]^2 in exact arithmetic, but without its
    cancellation, which leaves ~1e-8 |mean| of noise in the deviation (a log price of 11 against
    a spread of 1e-6) and makes a restart's start-up error decay from |mean| / deviation times
    higher than the deviation itself. A mean within rounding of a constant input snaps onto it.
    State size 4 (the last slot is unused).
    """
    if state[i + 1] == 0.0:
        state[i] = x
        state[i + 1] = 1.0
        state[i + 2] = 0.0
    else:
        d = x - state[i]
        mean = state[i] + a * d
        # A step below rounding leaves the mean a few ulps off a constant input for good, and
        # the variance decays to that residue squared: (x - mean) / deviation would climb to ~1.
        state[i] = x if mean == state[i] else mean
        state[i + 2] = (1.0 - a) * (state[i + 2] + a * d * d)


@njit(cache=True, inline="always")
def zscore(x, mean, var):
    """(x - mean) / deviation, 0 while the deviation is below 1e-12 of the mean's size: it is
    rounding residue then (a constant input leaves x - mean at one ulp), not a spread."""
    if math.isnan(x) or math.isnan(mean):
        return NAN
    deviation = math.sqrt(var) if var > 0.0 else 0.0
    if deviation <= 1e-12 * abs(mean) or deviation < 1e-300:
        return 0.0
    return (x - mean) / deviation


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
