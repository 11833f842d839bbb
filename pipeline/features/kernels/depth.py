"""Multi-level book kernels on the L2 book summary (pipeline.features.l2book): imbalance,
depth-weighted microprice, depth slope and concentration, order flow over levels.

They run on depth updates only (pipeline.features.step), so a ``*_tick`` window here counts depth
updates. Their signature adds the level count: ``kernel(state, off, w, levels, core)``, ``levels``
one of ``l2book.LEVELS``. They read the book's own best prices, not the quote stream's: a depth
feature is a function of the depth stream alone.
"""

from __future__ import annotations

import math

from numba import njit

from pipeline.features import core as c
from pipeline.features import l2book as b
from pipeline.features.kernels.ew import NAN, alpha, ew_update, ew_value, ratio


@njit(cache=True, inline="always")
def _at(levels):
    """Core slot of the summary block of ``levels``."""
    g = 0
    while g < b.LEVELS.shape[0] - 1 and b.LEVELS[g] != levels:
        g += 1
    return c.DEPTH + b.S_LEVEL0 + b.PER_LEVEL * g


@njit(cache=True, inline="always")
def _imbalance(core, at):
    bid, ask = core[at + b.L_BID_QTY], core[at + b.L_ASK_QTY]
    return ratio(bid - ask, bid + ask)


@njit(cache=True, inline="always")
def _mid(core):
    return 0.5 * (core[c.DEPTH + b.S_BID] + core[c.DEPTH + b.S_ASK])


@njit(cache=True, inline="always")
def depthimb(state, off, w, levels, core):
    """Book imbalance over the best L levels: (bid - ask) / (bid + ask) of their sizes, in [-1, 1]."""
    if core[c.N_DEPTH] == 0.0:
        return NAN
    return _imbalance(core, _at(levels))


@njit(cache=True, inline="always")
def depthimb_tick(state, off, w, levels, core):
    """EW mean of the L-level book imbalance over w depth updates."""
    ew_update(state, off, _imbalance(core, _at(levels)), alpha(w))
    return ew_value(state, off)


@njit(cache=True, inline="always")
def depthmicro(state, off, w, levels, core):
    """Depth-weighted microprice minus mid, relative to mid: each side's size-weighted price over
    its best L levels, weighted by the other side's size (Stoikov's microprice, over L levels)."""
    if core[c.N_DEPTH] == 0.0:
        return NAN
    at = _at(levels)
    bid, ask = core[at + b.L_BID_QTY], core[at + b.L_ASK_QTY]
    bid_px = core[at + b.L_BID_NOTIONAL] / bid
    ask_px = core[at + b.L_ASK_NOTIONAL] / ask
    return ((bid_px * ask + ask_px * bid) / (bid + ask)) / _mid(core) - 1.0


@njit(cache=True, inline="always")
def depthslope(state, off, w, levels, core):
    """log(bid slope / ask slope) over the best L levels, a slope being size per relative price
    distance from the mid to the L-th level: > 0 when the bids are the steeper (denser) side."""
    if core[c.N_DEPTH] == 0.0:
        return NAN
    at = _at(levels)
    mid = _mid(core)
    # Both distances are > 0: the L-th bid is at most the best bid, below the mid (and the ask above).
    bid_slope = core[at + b.L_BID_QTY] / (mid - core[at + b.L_BID_FAR])
    ask_slope = core[at + b.L_ASK_QTY] / (core[at + b.L_ASK_FAR] - mid)
    return math.log(bid_slope / ask_slope)


@njit(cache=True, inline="always")
def depthconc(state, off, w, levels, core):
    """Concentration: the share of the best L levels' size (both sides) at the best prices, in (0, 1]."""
    if core[c.N_DEPTH] == 0.0:
        return NAN
    at = _at(levels)
    top = core[c.DEPTH + b.S_BID_QTY] + core[c.DEPTH + b.S_ASK_QTY]
    return top / (core[at + b.L_BID_QTY] + core[at + b.L_ASK_QTY])


@njit(cache=True, inline="always")
def depthflow_tick(state, off, w, levels, core):
    """Order-flow imbalance over the best L levels: EW mean size the updates added there (bid minus
    ask; levels merely moving in or out of the best L add nothing) / EW mean L-level depth, span w
    depth updates."""
    at = _at(levels)
    a = alpha(w)
    ew_update(state, off, core[at + b.L_FLOW], a)
    ew_update(state, off + 2, 0.5 * (core[at + b.L_BID_QTY] + core[at + b.L_ASK_QTY]), a)
    return ratio(ew_value(state, off), ew_value(state, off + 2))
