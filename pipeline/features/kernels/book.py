"""Top-of-book kernels: spread, microprice and book imbalance."""

from __future__ import annotations

from numba import njit

from pipeline.features import core as c
from pipeline.features.kernels.ew import NAN, alpha, ew_update, ew_value, ratio


@njit(cache=True, inline="always")
def _rel_spread(core):
    return (core[c.ASK] - core[c.BID]) / core[c.MID]


@njit(cache=True, inline="always")
def _imbalance(core):
    return ratio(core[c.BID_QTY] - core[c.ASK_QTY], core[c.BID_QTY] + core[c.ASK_QTY])


@njit(cache=True, inline="always")
def spreadrel_l1(state, off, w, core):
    """Relative spread (ask - bid) / mid."""
    return _rel_spread(core) if core[c.HAS_BOOK] > 0.0 else NAN


@njit(cache=True, inline="always")
def spread_tick(state, off, w, core):
    """EW mean relative spread over w quote updates."""
    if core[c.IS_QUOTE] > 0.0:
        ew_update(state, off, _rel_spread(core), alpha(w))
    return ew_value(state, off)


@njit(cache=True, inline="always")
def microdev_l1(state, off, w, core):
    """Microprice minus mid, relative to mid; the microprice weighs each side by the other's size."""
    if core[c.HAS_BOOK] == 0.0:
        return NAN
    size = core[c.BID_QTY] + core[c.ASK_QTY]
    micro = ratio(core[c.BID] * core[c.ASK_QTY] + core[c.ASK] * core[c.BID_QTY], size)
    if micro == 0.0:
        return 0.0
    return micro / core[c.MID] - 1.0


@njit(cache=True, inline="always")
def bookimb_l1(state, off, w, core):
    """Top-of-book size imbalance (bid - ask) / (bid + ask), in [-1, 1]."""
    return _imbalance(core) if core[c.HAS_BOOK] > 0.0 else NAN


@njit(cache=True, inline="always")
def bookimb_tick(state, off, w, core):
    """EW mean top-of-book imbalance over w quote updates."""
    if core[c.IS_QUOTE] > 0.0:
        ew_update(state, off, _imbalance(core), alpha(w))
    return ew_value(state, off)
