"""Trend and oscillator kernels on the mid: RSI, Bollinger, EMA/SMA slopes and crosses, momentum
strength, efficiency ratio, trend strength and a Hurst-like variance ratio."""

from __future__ import annotations

import math

from numba import njit

from pipeline.features import core as c
from pipeline.features.kernels.ew import (
    NAN, alpha, ew_mean_var_update, ew_update, ew_value, ratio, ring_count, ring_oldest, ring_push, zscore,
)


@njit(cache=True, inline="always")
def rsi_tick(state, off, w, core):
    """RSI of mid changes with Wilder's smoothing (1/w), rescaled to [-1, 1]: (RSI - 50) / 50."""
    if core[c.IS_QUOTE] > 0.0 and core[c.N_QUOTES] > 1.0:
        a = 1.0 / w
        r = core[c.RET]
        ew_update(state, off, r if r > 0.0 else 0.0, a)
        ew_update(state, off + 2, -r if r < 0.0 else 0.0, a)
    up = ew_value(state, off)
    down = ew_value(state, off + 2)
    return ratio(up - down, up + down)


@njit(cache=True, inline="always")
def _ew_mean_var(state, off, w, core):
    """EW mean and variance of the log mid (span w), updated on quotes; state [m, init, var, -]."""
    if core[c.IS_QUOTE] > 0.0:
        ew_mean_var_update(state, off, core[c.LOG_MID], alpha(w))
    mean = ew_value(state, off)
    var = state[off + 2]
    return mean, (var if var > 0.0 else 0.0)


@njit(cache=True, inline="always")
def bbz_tick(state, off, w, core):
    """Bollinger z-score of the log mid against its EW mean and deviation (span w)."""
    mean, var = _ew_mean_var(state, off, w, core)
    if math.isnan(mean):
        return NAN
    return zscore(core[c.LOG_MID], mean, var)


@njit(cache=True, inline="always")
def bbw_tick(state, off, w, core):
    """Bollinger band width: 4 EW standard deviations of the log mid (span w)."""
    mean, var = _ew_mean_var(state, off, w, core)
    if math.isnan(mean):
        return NAN
    return 4.0 * math.sqrt(var)


@njit(cache=True, inline="always")
def emaslope_tick(state, off, w, core):
    """Slope of the EMA (span w) of the log mid, per w quote updates. State: [ema, init, slope]."""
    if core[c.IS_QUOTE] > 0.0:
        before = state[off]
        initialised = state[off + 1] != 0.0
        after = ew_update(state, off, core[c.LOG_MID], alpha(w))
        state[off + 2] = (after - before) * w if initialised else 0.0
    return state[off + 2] if state[off + 1] != 0.0 else NAN


@njit(cache=True, inline="always")
def emacross_tick(state, off, w, core):
    """EMA cross: EMA(w) - EMA(4 w) of the log mid."""
    if core[c.IS_QUOTE] > 0.0:
        ew_update(state, off, core[c.LOG_MID], alpha(w))
        ew_update(state, off + 2, core[c.LOG_MID], alpha(4.0 * w))
    return ew_value(state, off) - ew_value(state, off + 2)


@njit(cache=True, inline="always")
def _sma_push(state, off, n, x):
    """SMA over a ring of n values with a running sum at state[off]; ring at off + 1."""
    dropped = ring_push(state, off + 1, n, x)
    if not math.isnan(dropped):
        state[off] -= dropped
    state[off] += x
    return state[off] / ring_count(state, off + 1)


@njit(cache=True, inline="always")
def smaslope_tick(state, off, w, core):
    """Slope of the SMA (w quote updates) of the log mid, per w updates. State: [slope, prev, sum, ring]."""
    n = int(w)
    if core[c.IS_QUOTE] > 0.0:
        sma = _sma_push(state, off + 2, n, core[c.LOG_MID])
        previous = state[off + 1]
        state[off] = (sma - previous) * w if ring_count(state, off + 3) > 1.0 else 0.0
        state[off + 1] = sma
    return state[off] if ring_count(state, off + 3) > 0.0 else NAN


@njit(cache=True, inline="always")
def smacross_tick(state, off, w, core):
    """SMA cross: SMA(w) - SMA(4 w) of the log mid (quote updates). State: [cross, sum, ring w, sum, ring 4w]."""
    n = int(w)
    second = off + 1 + n + 3
    if core[c.IS_QUOTE] > 0.0:
        fast = _sma_push(state, off + 1, n, core[c.LOG_MID])
        slow = _sma_push(state, second, 4 * n, core[c.LOG_MID])
        state[off] = fast - slow
    return state[off] if ring_count(state, off + 2) > 0.0 else NAN


@njit(cache=True, inline="always")
def _ret_and_vol(state, off, w, core):
    """Return over w quote updates (ring of log mids) and EW mean r^2 (span w); shared layout."""
    n = int(w) + 1
    if core[c.IS_QUOTE] > 0.0:
        ring_push(state, off + 2, n, core[c.LOG_MID])
        if core[c.N_QUOTES] > 1.0:
            ew_update(state, off, core[c.RET] * core[c.RET], alpha(w))
    if ring_count(state, off + 2) == 0.0:
        return NAN, NAN
    return core[c.LOG_MID] - ring_oldest(state, off + 2, n), ew_value(state, off)


@njit(cache=True, inline="always")
def momstr_tick(state, off, w, core):
    """Momentum strength: return over w quote updates in units of its expected deviation."""
    ret, var = _ret_and_vol(state, off, w, core)
    return ratio(ret, math.sqrt(var * w)) if not math.isnan(var) else NAN


@njit(cache=True, inline="always")
def hurst_tick(state, off, w, core):
    """Hurst-like variance ratio: EW mean squared w-update return / (w x EW mean r^2); ~1 for a
    random walk, > 1 trending, < 1 mean-reverting."""
    ret, var = _ret_and_vol(state, off, w, core)
    if core[c.IS_QUOTE] > 0.0 and not math.isnan(ret):
        ew_update(state, off + 2 + int(w) + 3, ret * ret, alpha(w))
    return ratio(ew_value(state, off + 2 + int(w) + 3), w * var)


@njit(cache=True, inline="always")
def effratio_tick(state, off, w, core):
    """Kaufman efficiency ratio over w quote updates: |net move| / sum of |moves|."""
    n = int(w)
    moves = off + 1  # running sum at off, ring of |r| at off + 1
    mids = off + 1 + n + 2
    if core[c.IS_QUOTE] > 0.0:
        ring_push(state, mids, n + 1, core[c.LOG_MID])
        if core[c.N_QUOTES] > 1.0:
            dropped = ring_push(state, moves, n, abs(core[c.RET]))
            if not math.isnan(dropped):
                state[off] -= dropped
            state[off] += abs(core[c.RET])
    if ring_count(state, mids) == 0.0:
        return NAN
    return ratio(abs(core[c.LOG_MID] - ring_oldest(state, mids, n + 1)), state[off])


@njit(cache=True, inline="always")
def trend_tick(state, off, w, core):
    """Trend strength: EW mean return / EW return deviation x sqrt(w) (a t-statistic of drift)."""
    if core[c.IS_QUOTE] > 0.0 and core[c.N_QUOTES] > 1.0:
        a = alpha(w)
        ew_update(state, off, core[c.RET], a)
        ew_update(state, off + 2, core[c.RET] * core[c.RET], a)
    mean = ew_value(state, off)
    var = ew_value(state, off + 2) - mean * mean
    return ratio(mean * math.sqrt(w), math.sqrt(var if var > 0.0 else 0.0))
