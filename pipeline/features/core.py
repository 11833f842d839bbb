"""The per-event core every indicator reads: the book, the mid, returns, time steps, the last trade,
and the summary of the L2 book.

An event is a top-of-book quote update, a trade or a depth update (``KIND_QUOTE`` / ``KIND_TRADE``
/ ``KIND_DEPTH``). ``update_core`` validates a quote or a trade and derives what the indicators
share, once per event, into the ``core`` array; ``update_depth`` copies a depth update's book
summary (``pipeline.features.l2book``) into its slots.

A depth update is a side channel: it changes only the depth slots and the depth counter, not the
clock or the event counters, and only depth features run on it (``pipeline.features.step``). So
every other feature is the same, value for value, whether the stream carries depth or not.

Defined behaviour for bad input (the same online and offline, since both run this function):
- a quote with a NaN/inf/non-positive price, a negative or NaN size, or a crossed/locked book,
  and a trade with a NaN/inf/non-positive price or quantity, is ignored: no state changes and
  every indicator keeps its previous value;
- an event older than the latest seen (out of order) is processed with a time step of 0: time
  never runs backwards inside the indicators;
- gaps need nothing special: time-decayed indicators decay over the gap, tick-counted ones do not;
- a depth update whose book is not valid (before the first snapshot, after a sequence gap until
  the next snapshot, crossed) has no summary and is ignored like a bad quote: the depth features
  keep their last values. Where a symbol has no depth at all they stay NaN and never warm.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipeline.features.l2book import S_ASK, S_BID, SUMMARY_SIZE

KIND_QUOTE = 0
KIND_TRADE = 1
KIND_DEPTH = 2

# Slots of the core array.
BID, BID_QTY, ASK, ASK_QTY = 0, 1, 2, 3
PREV_BID, PREV_BID_QTY, PREV_ASK, PREV_ASK_QTY = 4, 5, 6, 7
MID, LOG_MID, PREV_LOG_MID = 8, 9, 10
RET = 11  # log-mid return of this quote update (0 on other events)
OFI_E = 12  # Cont-Kukanov-Stoikov order-flow increment of this quote update
DT = 13  # seconds since the previous valid event (>= 0)
T = 14  # seconds since the first valid event
IS_QUOTE, IS_TRADE = 15, 16  # this event updated the book / was a valid trade
TRADE_PX, TRADE_QTY, TRADE_SIDE = 17, 18, 19
PREV_TRADE_PX = 20
TRADE_DT = 21  # seconds since the previous trade
LOG_MID_AT_TRADE = 22  # log mid when the previous trade happened (for price impact)
TRADE_IMPACT = 23  # log-mid change between the previous trade and this one
LAST_TRADE_T = 24
N_QUOTES, N_TRADES, N_EVENTS = 25, 26, 27
HAS_BOOK, HAS_TRADE = 28, 29
N_MOVES = 30  # quote updates that moved the mid (a scale-free ratio of returns learns only from these)
N_DEPTH = 31  # depth updates with a valid book summary
DEPTH = 32  # the latest book summary: DEPTH + the l2book.S_* / per-level offsets
CORE_SIZE = DEPTH + SUMMARY_SIZE

# Slots of the int64 clock array.
CLOCK_FIRST_NS, CLOCK_LAST_NS = 0, 1
CLOCK_SIZE = 2


def new_core() -> tuple[np.ndarray, np.ndarray]:
    core = np.zeros(CORE_SIZE, dtype=np.float64)
    clock = np.full(CLOCK_SIZE, -1, dtype=np.int64)
    return core, clock


@njit(cache=True, inline="always")
def _finite_positive(x: float) -> bool:
    return math.isfinite(x) and x > 0.0


@njit(cache=True)
def update_core(core, clock, ts_ns, kind, price, qty, side, bid, bid_qty, ask, ask_qty) -> bool:
    """Fold one event into ``core``; False (and nothing changed) for an invalid event."""
    if kind == KIND_QUOTE:
        if not (_finite_positive(bid) and _finite_positive(ask) and bid < ask):
            return False
        if not (math.isfinite(bid_qty) and math.isfinite(ask_qty) and bid_qty >= 0.0 and ask_qty >= 0.0):
            return False
    elif kind == KIND_TRADE:
        if not (_finite_positive(price) and _finite_positive(qty)):
            return False
    else:
        return False

    if clock[CLOCK_FIRST_NS] < 0:
        clock[CLOCK_FIRST_NS] = ts_ns
        clock[CLOCK_LAST_NS] = ts_ns
    dt = 0.0
    if ts_ns > clock[CLOCK_LAST_NS]:
        dt = (ts_ns - clock[CLOCK_LAST_NS]) * 1e-9
        clock[CLOCK_LAST_NS] = ts_ns
    core[DT] = dt
    core[T] = (clock[CLOCK_LAST_NS] - clock[CLOCK_FIRST_NS]) * 1e-9
    core[N_EVENTS] += 1.0
    core[IS_QUOTE] = 0.0
    core[IS_TRADE] = 0.0
    core[RET] = 0.0
    core[OFI_E] = 0.0

    if kind == KIND_QUOTE:
        had_book = core[HAS_BOOK] > 0.0
        core[PREV_BID] = core[BID]
        core[PREV_BID_QTY] = core[BID_QTY]
        core[PREV_ASK] = core[ASK]
        core[PREV_ASK_QTY] = core[ASK_QTY]
        core[BID] = bid
        core[BID_QTY] = bid_qty
        core[ASK] = ask
        core[ASK_QTY] = ask_qty
        mid = 0.5 * (bid + ask)
        log_mid = math.log(mid)
        core[PREV_LOG_MID] = core[LOG_MID] if had_book else log_mid
        core[MID] = mid
        core[LOG_MID] = log_mid
        if had_book:
            core[RET] = log_mid - core[PREV_LOG_MID]
            if core[RET] != 0.0:
                core[N_MOVES] += 1.0
            # Order-flow imbalance increment (Cont, Kukanov & Stoikov 2014).
            e = 0.0
            if bid >= core[PREV_BID]:
                e += bid_qty
            if bid <= core[PREV_BID]:
                e -= core[PREV_BID_QTY]
            if ask <= core[PREV_ASK]:
                e -= ask_qty
            if ask >= core[PREV_ASK]:
                e += core[PREV_ASK_QTY]
            core[OFI_E] = e
        core[HAS_BOOK] = 1.0
        core[IS_QUOTE] = 1.0
        core[N_QUOTES] += 1.0
    else:
        had_trade = core[HAS_TRADE] > 0.0
        core[PREV_TRADE_PX] = core[TRADE_PX] if had_trade else price
        core[TRADE_PX] = price
        core[TRADE_QTY] = qty
        core[TRADE_SIDE] = 1.0 if side > 0 else (-1.0 if side < 0 else 0.0)
        core[TRADE_DT] = core[T] - core[LAST_TRADE_T] if had_trade else 0.0
        core[LAST_TRADE_T] = core[T]
        reference = core[LOG_MID] if core[HAS_BOOK] > 0.0 else math.log(price)
        core[TRADE_IMPACT] = reference - core[LOG_MID_AT_TRADE] if had_trade else 0.0
        core[LOG_MID_AT_TRADE] = reference
        core[HAS_TRADE] = 1.0
        core[IS_TRADE] = 1.0
        core[N_TRADES] += 1.0
    return True


@njit(cache=True)
def update_depth(core, summary) -> bool:
    """Fold one depth update's book summary into ``core``; False (and nothing changed) without one."""
    if summary.shape[0] != SUMMARY_SIZE:
        return False
    bid, ask = summary[S_BID], summary[S_ASK]
    if not (_finite_positive(bid) and _finite_positive(ask) and bid < ask):
        return False
    for i in range(SUMMARY_SIZE):
        core[DEPTH + i] = summary[i]
    core[N_DEPTH] += 1.0
    return True
