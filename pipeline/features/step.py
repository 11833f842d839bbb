"""The compiled step: one event through the core and every indicator of a program.

Online (``FeatureEngine.update``) and offline (``run_batch``) both call ``step``, so a feature has
one definition and the two paths cannot drift apart. A program is two arrays built by
``pipeline.features.catalog.compile_program``: per feature its family id, transform id, state
offsets (int64 [k, 4]) and its window, transform span, the untransformed indicator's warm-up
(quotes, trades, events, seconds, moves, depth) and book levels (float64 [k, 9]).

A quote or trade runs every feature but the depth ones; a depth update runs the depth ones only
(their family ids start at ``families.FIRST_DEPTH``), with its book summary in ``depth``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipeline.features import families as f
from pipeline.features import core as c
from pipeline.features.core import KIND_DEPTH, update_core, update_depth
from pipeline.features.kernels import activity, book, depth, flow, price, trend
from pipeline.features.kernels.ew import alpha, ew_mean_var_update, ew_update, zscore

RAW, ZSCORE, DEVIATION = 0, 1, 2


@njit(cache=True, inline="always")
def base_value(fid, state, off, w, core):  # noqa: C901 (a flat switch is the point)
    if fid == f.RET_TICK:
        return price.ret_tick(state, off, w, core)
    if fid == f.RET_TIME:
        return price.ret_time(state, off, w, core)
    if fid == f.RV_TICK:
        return price.rv_tick(state, off, w, core)
    if fid == f.RV_TIME:
        return price.rv_time(state, off, w, core)
    if fid == f.TICKVOL_TICK:
        return price.tickvol_tick(state, off, w, core)
    if fid == f.ATR_TICK:
        return price.atr_tick(state, off, w, core)
    if fid == f.PARK_TICK:
        return price.park_tick(state, off, w, core)
    if fid == f.AUTOCORR_TICK:
        return price.autocorr_tick(state, off, w, core)
    if fid == f.OFI_TICK:
        return flow.ofi_tick(state, off, w, core)
    if fid == f.OFI_TIME:
        return flow.ofi_time(state, off, w, core)
    if fid == f.TSI_TICK:
        return flow.tsi_tick(state, off, w, core)
    if fid == f.TSI_TIME:
        return flow.tsi_time(state, off, w, core)
    if fid == f.SV_TICK:
        return flow.sv_tick(state, off, w, core)
    if fid == f.SV_TIME:
        return flow.sv_time(state, off, w, core)
    if fid == f.VOLSPIKE_TICK:
        return flow.volspike_tick(state, off, w, core)
    if fid == f.VOLSPIKE_TIME:
        return flow.volspike_time(state, off, w, core)
    if fid == f.VWAPDEV_TICK:
        return flow.vwapdev_tick(state, off, w, core)
    if fid == f.VWAPDEV_TIME:
        return flow.vwapdev_time(state, off, w, core)
    if fid == f.KYLE_TICK:
        return flow.kyle_tick(state, off, w, core)
    if fid == f.AMIHUD_TICK:
        return flow.amihud_tick(state, off, w, core)
    if fid == f.RSI_TICK:
        return trend.rsi_tick(state, off, w, core)
    if fid == f.BBZ_TICK:
        return trend.bbz_tick(state, off, w, core)
    if fid == f.BBW_TICK:
        return trend.bbw_tick(state, off, w, core)
    if fid == f.EMASLOPE_TICK:
        return trend.emaslope_tick(state, off, w, core)
    if fid == f.EMACROSS_TICK:
        return trend.emacross_tick(state, off, w, core)
    if fid == f.SMASLOPE_TICK:
        return trend.smaslope_tick(state, off, w, core)
    if fid == f.SMACROSS_TICK:
        return trend.smacross_tick(state, off, w, core)
    if fid == f.MOMSTR_TICK:
        return trend.momstr_tick(state, off, w, core)
    if fid == f.HURST_TICK:
        return trend.hurst_tick(state, off, w, core)
    if fid == f.EFFRATIO_TICK:
        return trend.effratio_tick(state, off, w, core)
    if fid == f.TREND_TICK:
        return trend.trend_tick(state, off, w, core)
    if fid == f.SPREADREL_L1:
        return book.spreadrel_l1(state, off, w, core)
    if fid == f.SPREAD_TICK:
        return book.spread_tick(state, off, w, core)
    if fid == f.MICRODEV_L1:
        return book.microdev_l1(state, off, w, core)
    if fid == f.BOOKIMB_L1:
        return book.bookimb_l1(state, off, w, core)
    if fid == f.BOOKIMB_TICK:
        return book.bookimb_tick(state, off, w, core)
    if fid == f.TRADERATE_TIME:
        return activity.traderate_time(state, off, w, core)
    if fid == f.QUOTERATE_TIME:
        return activity.quoterate_time(state, off, w, core)
    if fid == f.IAT_TICK:
        return activity.iat_tick(state, off, w, core)
    if fid == f.SINCELARGE:
        return activity.sincelarge(state, off, w, core)
    return math.nan


@njit(cache=True, inline="always")
def depth_value(fid, state, off, w, levels, core):
    if fid == f.DEPTHIMB:
        return depth.depthimb(state, off, w, levels, core)
    if fid == f.DEPTHIMB_TICK:
        return depth.depthimb_tick(state, off, w, levels, core)
    if fid == f.DEPTHMICRO:
        return depth.depthmicro(state, off, w, levels, core)
    if fid == f.DEPTHSLOPE:
        return depth.depthslope(state, off, w, levels, core)
    if fid == f.DEPTHCONC:
        return depth.depthconc(state, off, w, levels, core)
    if fid == f.DEPTHFLOW_TICK:
        return depth.depthflow_tick(state, off, w, levels, core)
    return math.nan


@njit(cache=True, inline="always")
def transform(tid, state, off, span, v):
    """RAW: v. ZSCORE: (v - EW mean) / EW std over ``span`` events. DEVIATION: v - EW mean.
    Fed from the moment its input is warm (NaN before): a z-score's variance would otherwise keep
    the square of the input's start-up swings (an early regression slope 1000 x its scale) for
    ten spans and more."""
    if tid == RAW:
        return v
    if math.isnan(v):
        return math.nan
    a = alpha(span)
    if tid == DEVIATION:
        return v - ew_update(state, off, v, a)
    ew_mean_var_update(state, off, v, a)
    return zscore(v, state[off], state[off + 2])


TRANSFORM_STATE = {RAW: 0, ZSCORE: 4, DEVIATION: 2}


@njit(cache=True)
def step(iprog, fprog, state, core, clock, ts_ns, kind, price_, qty, side, bid, bid_qty, ask, ask_qty, depth_,
         out):
    """Fold one event into every indicator of the program that runs on it; ``out`` keeps the
    previous values when the event is invalid (returns False) and for the features it does not run.
    ``depth_`` is a depth update's book summary (ignored on other events)."""
    is_depth = kind == KIND_DEPTH
    if is_depth:
        if not update_depth(core, depth_):
            return False
    elif not update_core(core, clock, ts_ns, kind, price_, qty, side, bid, bid_qty, ask, ask_qty):
        return False
    for k in range(iprog.shape[0]):
        fid = iprog[k, 0]
        if (fid >= f.FIRST_DEPTH) != is_depth:
            continue
        if is_depth:
            v = depth_value(fid, state, iprog[k, 2], fprog[k, 0], fprog[k, 8], core)
        else:
            v = base_value(fid, state, iprog[k, 2], fprog[k, 0], core)
        if iprog[k, 1] != RAW and not _base_warm(fprog, k, core):
            v = math.nan  # a transform must not remember its input's start-up values
        out[k] = transform(iprog[k, 1], state, iprog[k, 3], fprog[k, 1], v)
    return True


@njit(cache=True, inline="always")
def _base_warm(fprog, k, core):
    """The untransformed indicator of feature k has seen its declared warm-up (fprog[k, 2:8])."""
    return (core[c.N_QUOTES] >= fprog[k, 2] and core[c.N_TRADES] >= fprog[k, 3]
            and core[c.N_EVENTS] >= fprog[k, 4] and core[c.T] >= fprog[k, 5] and core[c.N_MOVES] >= fprog[k, 6]
            and core[c.N_DEPTH] >= fprog[k, 7])


@njit(cache=True, nogil=True)  # nogil: run_program runs parts of a large program in threads
def run_batch(iprog, fprog, state, core, clock, values, ts_ns, kind, price_, qty, side, bid, bid_qty, ask,
              ask_qty, depth_row, depth_, emit, out, progress):
    """Run ``step`` over arrays of events; copy the values after event ``emit[j]`` into ``out[j]``
    and the warm-up counters (quotes, trades, events, seconds, moves, depth) into ``progress[j]``.
    A depth event's book summary is ``depth_[depth_row[i]]`` (no summary where the row is < 0).
    ``emit`` must be sorted. ``values`` (the latest outputs) carries over between calls, like the
    state, so a long stream can be run in chunks."""
    none = np.empty(0)
    j = 0
    for i in range(ts_ns.shape[0]):
        summary = depth_[depth_row[i]] if depth_row[i] >= 0 else none
        step(iprog, fprog, state, core, clock, ts_ns[i], kind[i], price_[i], qty[i], side[i],
             bid[i], bid_qty[i], ask[i], ask_qty[i], summary, values)
        while j < emit.shape[0] and emit[j] == i:
            out[j, :] = values
            progress[j, 0] = core[c.N_QUOTES]
            progress[j, 1] = core[c.N_TRADES]
            progress[j, 2] = core[c.N_EVENTS]
            progress[j, 3] = core[c.T]
            progress[j, 4] = core[c.N_MOVES]
            progress[j, 5] = core[c.N_DEPTH]
            j += 1
    return j
