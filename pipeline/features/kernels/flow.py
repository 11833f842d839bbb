"""Order-flow kernels on trades and book changes: OFI, trade-sign and signed-volume imbalance,
volume spikes, VWAP deviation, Kyle's lambda and Amihud illiquidity."""

from __future__ import annotations

import math

from numba import njit

from pipeline.features import core as c
from pipeline.features.kernels.ew import NAN, alpha, decay, ew_update, ew_value, ratio


@njit(cache=True, inline="always")
def _reference_price(core):
    return core[c.MID] if core[c.HAS_BOOK] > 0.0 else core[c.TRADE_PX]


@njit(cache=True, inline="always")
def ofi_tick(state, off, w, core):
    """Order-flow imbalance: EW mean OFI increment / EW mean top-of-book depth (span w quotes)."""
    if core[c.IS_QUOTE] > 0.0 and core[c.N_QUOTES] > 1.0:
        a = alpha(w)
        ew_update(state, off, core[c.OFI_E], a)
        ew_update(state, off + 2, 0.5 * (core[c.BID_QTY] + core[c.ASK_QTY]), a)
    return ratio(ew_value(state, off), ew_value(state, off + 2))


@njit(cache=True, inline="always")
def ofi_time(state, off, w, core):
    """Order-flow imbalance over time: decayed sum of OFI increments / decayed sum of depth."""
    if core[c.HAS_BOOK] == 0.0:
        return NAN
    d = decay(core[c.DT], w)
    state[off] = state[off] * d + core[c.OFI_E]
    if core[c.IS_QUOTE] > 0.0:
        state[off + 1] = state[off + 1] * d + 0.5 * (core[c.BID_QTY] + core[c.ASK_QTY])
    else:
        state[off + 1] = state[off + 1] * d
    return ratio(state[off], state[off + 1])


@njit(cache=True, inline="always")
def tsi_tick(state, off, w, core):
    """Trade-sign imbalance: EW mean aggressor side (+1 buy, -1 sell) over w trades."""
    if core[c.IS_TRADE] > 0.0:
        ew_update(state, off, core[c.TRADE_SIDE], alpha(w))
    return ew_value(state, off)


@njit(cache=True, inline="always")
def tsi_time(state, off, w, core):
    """Trade-sign imbalance over time: decayed sum of sides / decayed trade count."""
    if core[c.HAS_TRADE] == 0.0:
        return NAN
    d = decay(core[c.DT], w)
    trade = core[c.IS_TRADE]
    state[off] = state[off] * d + trade * core[c.TRADE_SIDE]
    state[off + 1] = state[off + 1] * d + trade
    return ratio(state[off], state[off + 1])


@njit(cache=True, inline="always")
def sv_tick(state, off, w, core):
    """Signed-volume imbalance: EW signed quantity / EW quantity over w trades, in [-1, 1]."""
    if core[c.IS_TRADE] > 0.0:
        a = alpha(w)
        ew_update(state, off, core[c.TRADE_SIDE] * core[c.TRADE_QTY], a)
        ew_update(state, off + 2, core[c.TRADE_QTY], a)
    return ratio(ew_value(state, off), ew_value(state, off + 2))


@njit(cache=True, inline="always")
def sv_time(state, off, w, core):
    """Signed-volume imbalance over time (decayed sums)."""
    if core[c.HAS_TRADE] == 0.0:
        return NAN
    d = decay(core[c.DT], w)
    qty = core[c.IS_TRADE] * core[c.TRADE_QTY]
    state[off] = state[off] * d + core[c.TRADE_SIDE] * qty
    state[off + 1] = state[off + 1] * d + qty
    return ratio(state[off], state[off + 1])


@njit(cache=True, inline="always")
def volspike_tick(state, off, w, core):
    """Volume spike: EW trade size over w trades / EW trade size over 20 w trades."""
    if core[c.IS_TRADE] > 0.0:
        ew_update(state, off, core[c.TRADE_QTY], alpha(w))
        ew_update(state, off + 2, core[c.TRADE_QTY], alpha(20.0 * w))
    return ratio(ew_value(state, off), ew_value(state, off + 2))


@njit(cache=True, inline="always")
def volspike_time(state, off, w, core):
    """Volume-rate spike: traded volume per second over w seconds / over 20 w seconds."""
    if core[c.HAS_TRADE] == 0.0:
        return NAN
    qty = core[c.IS_TRADE] * core[c.TRADE_QTY]
    state[off] = state[off] * decay(core[c.DT], w) + qty
    state[off + 1] = state[off + 1] * decay(core[c.DT], 20.0 * w) + qty
    return ratio(state[off] / w, state[off + 1] / (20.0 * w))


@njit(cache=True, inline="always")
def vwapdev_tick(state, off, w, core):
    """Deviation of the mid (or last trade) from the EW VWAP of the last w trades, relative."""
    if core[c.IS_TRADE] > 0.0:
        a = alpha(w)
        ew_update(state, off, core[c.TRADE_PX] * core[c.TRADE_QTY], a)
        ew_update(state, off + 2, core[c.TRADE_QTY], a)
    vwap = ratio(ew_value(state, off), ew_value(state, off + 2))
    if math.isnan(vwap) or vwap == 0.0:
        return NAN
    return _reference_price(core) / vwap - 1.0


@njit(cache=True, inline="always")
def vwapdev_time(state, off, w, core):
    """Deviation from the time-decayed VWAP (time constant w seconds), relative.

    After a silence long enough for the decayed volume to vanish (~700 tau), the last VWAP
    stands in, rather than a NaN reaching a warm feature. State: [sum qty x px, sum qty, vwap]."""
    if core[c.HAS_TRADE] == 0.0:
        return NAN
    d = decay(core[c.DT], w)
    qty = core[c.IS_TRADE] * core[c.TRADE_QTY]
    state[off] = state[off] * d + qty * core[c.TRADE_PX]
    state[off + 1] = state[off + 1] * d + qty
    vwap = ratio(state[off], state[off + 1])
    if vwap > 0.0:
        state[off + 2] = vwap
    return _reference_price(core) / state[off + 2] - 1.0


@njit(cache=True, inline="always")
def kyle_tick(state, off, w, core):
    """Kyle's lambda: EW regression slope of the log-mid change between trades on signed notional
    (in millions of quote currency), over w trades. State: EW means of x, y, xy, x^2."""
    if core[c.IS_TRADE] > 0.0 and core[c.N_TRADES] > 1.0:
        a = alpha(w)
        x = core[c.TRADE_SIDE] * core[c.TRADE_QTY] * core[c.TRADE_PX] * 1e-6
        y = core[c.TRADE_IMPACT]
        ew_update(state, off, x, a)
        ew_update(state, off + 2, y, a)
        ew_update(state, off + 4, x * y, a)
        ew_update(state, off + 6, x * x, a)
    mx = ew_value(state, off)
    cov = ew_value(state, off + 4) - mx * ew_value(state, off + 2)
    var = ew_value(state, off + 6) - mx * mx
    return ratio(cov, var)


@njit(cache=True, inline="always")
def amihud_tick(state, off, w, core):
    """Amihud illiquidity: EW mean |log-mid change between trades| per million of notional traded."""
    if core[c.IS_TRADE] > 0.0 and core[c.N_TRADES] > 1.0:
        notional = core[c.TRADE_QTY] * core[c.TRADE_PX] * 1e-6
        ew_update(state, off, abs(core[c.TRADE_IMPACT]) / notional, alpha(w))
    return ew_value(state, off)
