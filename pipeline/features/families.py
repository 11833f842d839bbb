"""The indicator families: each kernel with its stream, window unit, state size and warm-up.

A family plus a window is a base indicator (``rsi_tick_100``, ``rv_time_5s``). Warm-ups are what a
kernel needs before its value no longer depends on where the computation started (to ~1e-3 of
its scale): ring-buffer windows are exact after w + 1 updates; an EW average of span w forgets
its start as exp(-2n / w), so 4 w updates; Wilder's 1/w smoothing needs 8 w; a time constant tau
needs 7 tau. ``autoscalp features check`` verifies every declaration on data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pipeline.features.kernels import activity, book, flow, price, trend

Stream = Literal["quotes", "trades", "events"]
Unit = Literal["tick", "time", "level"]

# Family ids, as the compiled dispatcher (pipeline.features.step) switches on them.
(
    RET_TICK, RET_TIME, RV_TICK, RV_TIME, TICKVOL_TICK, ATR_TICK, PARK_TICK, AUTOCORR_TICK,
    OFI_TICK, OFI_TIME, TSI_TICK, TSI_TIME, SV_TICK, SV_TIME, VOLSPIKE_TICK, VOLSPIKE_TIME,
    VWAPDEV_TICK, VWAPDEV_TIME, KYLE_TICK, AMIHUD_TICK, RSI_TICK, BBZ_TICK, BBW_TICK,
    EMASLOPE_TICK, EMACROSS_TICK, SMASLOPE_TICK, SMACROSS_TICK, MOMSTR_TICK, HURST_TICK,
    EFFRATIO_TICK, TREND_TICK, SPREADREL_L1, SPREAD_TICK, MICRODEV_L1, BOOKIMB_L1, BOOKIMB_TICK,
    TRADERATE_TIME, QUOTERATE_TIME, IAT_TICK, SINCELARGE,
) = range(40)


@dataclass(frozen=True)
class Warmup:
    """How much history an indicator needs: all of these must have been seen."""

    quotes: int = 0
    trades: int = 0
    events: int = 0
    seconds: float = 0.0

    def __add__(self, other: Warmup) -> Warmup:
        return Warmup(
            self.quotes + other.quotes, self.trades + other.trades,
            self.events + other.events, self.seconds + other.seconds,
        )


@dataclass(frozen=True)
class Family:
    id: int
    name: str  # the name prefix, e.g. "rsi_tick"
    kernel: Callable
    stream: Stream  # whose updates a tick window counts
    unit: Unit
    state_size: Callable[[int], int]
    warmup: Callable[[float], Warmup]
    description: str


def _ew(stream: Stream, factor: float = 4.0) -> Callable[[float], Warmup]:
    def warmup(w: float) -> Warmup:
        n = int(factor * w) + 2
        return Warmup(quotes=n) if stream == "quotes" else Warmup(trades=n)

    return warmup


def _ring(w: float) -> Warmup:
    return Warmup(quotes=int(w) + 2)


def _time(factor: float = 7.0, needs_book: bool = False) -> Callable[[float], Warmup]:
    return lambda w: Warmup(quotes=1 if needs_book else 0, seconds=factor * w)


def _const(size: int) -> Callable[[int], int]:
    return lambda w: size


def _doc(kernel: Callable) -> str:
    return (kernel.__doc__ or "").strip().split("\n")[0]


def _family(fid, name, kernel, stream, unit, size, warmup) -> Family:
    return Family(fid, name, kernel, stream, unit, size, warmup, _doc(kernel.py_func))


FAMILIES: tuple[Family, ...] = (
    _family(RET_TICK, "ret_tick", price.ret_tick, "quotes", "tick", lambda w: w + 3, _ring),
    _family(RET_TIME, "ret_time", price.ret_time, "events", "time", _const(2), _time(needs_book=True)),
    _family(RV_TICK, "rv_tick", price.rv_tick, "quotes", "tick", _const(2), _ew("quotes")),
    _family(RV_TIME, "rv_time", price.rv_time, "events", "time", _const(1), _time(needs_book=True)),
    _family(TICKVOL_TICK, "tickvol_tick", price.tickvol_tick, "quotes", "tick", _const(2), _ew("quotes")),
    _family(ATR_TICK, "atr_tick", price.atr_tick, "trades", "tick", _const(2), _ew("trades")),
    _family(PARK_TICK, "park_tick", price.park_tick, "quotes", "tick", lambda w: 5 + 4 * w, _ring),
    _family(AUTOCORR_TICK, "autocorr_tick", price.autocorr_tick, "quotes", "tick", _const(5), _ew("quotes")),
    _family(OFI_TICK, "ofi_tick", flow.ofi_tick, "quotes", "tick", _const(4), _ew("quotes")),
    _family(OFI_TIME, "ofi_time", flow.ofi_time, "events", "time", _const(2), _time(needs_book=True)),
    _family(TSI_TICK, "tsi_tick", flow.tsi_tick, "trades", "tick", _const(2), _ew("trades")),
    _family(TSI_TIME, "tsi_time", flow.tsi_time, "events", "time", _const(2), _time()),
    _family(SV_TICK, "sv_tick", flow.sv_tick, "trades", "tick", _const(4), _ew("trades")),
    _family(SV_TIME, "sv_time", flow.sv_time, "events", "time", _const(2), _time()),
    _family(VOLSPIKE_TICK, "volspike_tick", flow.volspike_tick, "trades", "tick", _const(4), _ew("trades", 80.0)),
    _family(VOLSPIKE_TIME, "volspike_time", flow.volspike_time, "events", "time", _const(2), _time(140.0)),
    _family(VWAPDEV_TICK, "vwapdev_tick", flow.vwapdev_tick, "trades", "tick", _const(4), _ew("trades")),
    _family(VWAPDEV_TIME, "vwapdev_time", flow.vwapdev_time, "events", "time", _const(2), _time()),
    _family(KYLE_TICK, "kyle_tick", flow.kyle_tick, "trades", "tick", _const(8), _ew("trades")),
    _family(AMIHUD_TICK, "amihud_tick", flow.amihud_tick, "trades", "tick", _const(2), _ew("trades")),
    _family(RSI_TICK, "rsi_tick", trend.rsi_tick, "quotes", "tick", _const(4), _ew("quotes", 8.0)),
    _family(BBZ_TICK, "bbz_tick", trend.bbz_tick, "quotes", "tick", _const(4), _ew("quotes")),
    _family(BBW_TICK, "bbw_tick", trend.bbw_tick, "quotes", "tick", _const(4), _ew("quotes")),
    _family(EMASLOPE_TICK, "emaslope_tick", trend.emaslope_tick, "quotes", "tick", _const(3), _ew("quotes")),
    _family(EMACROSS_TICK, "emacross_tick", trend.emacross_tick, "quotes", "tick", _const(4), _ew("quotes", 16.0)),
    _family(SMASLOPE_TICK, "smaslope_tick", trend.smaslope_tick, "quotes", "tick", lambda w: w + 5, _ring),
    _family(SMACROSS_TICK, "smacross_tick", trend.smacross_tick, "quotes", "tick", lambda w: 5 * w + 7,
            lambda w: Warmup(quotes=4 * int(w) + 2)),
    _family(MOMSTR_TICK, "momstr_tick", trend.momstr_tick, "quotes", "tick", lambda w: w + 5, _ew("quotes")),
    _family(HURST_TICK, "hurst_tick", trend.hurst_tick, "quotes", "tick", lambda w: w + 7, _ew("quotes", 8.0)),
    _family(EFFRATIO_TICK, "effratio_tick", trend.effratio_tick, "quotes", "tick", lambda w: 2 * w + 6, _ring),
    _family(TREND_TICK, "trend_tick", trend.trend_tick, "quotes", "tick", _const(4), _ew("quotes")),
    _family(SPREADREL_L1, "spreadrel_l1", book.spreadrel_l1, "quotes", "level", _const(0), lambda w: Warmup(quotes=1)),
    _family(SPREAD_TICK, "spread_tick", book.spread_tick, "quotes", "tick", _const(2), _ew("quotes")),
    _family(MICRODEV_L1, "microdev_l1", book.microdev_l1, "quotes", "level", _const(0), lambda w: Warmup(quotes=1)),
    _family(BOOKIMB_L1, "bookimb_l1", book.bookimb_l1, "quotes", "level", _const(0), lambda w: Warmup(quotes=1)),
    _family(BOOKIMB_TICK, "bookimb_tick", book.bookimb_tick, "quotes", "tick", _const(2), _ew("quotes")),
    _family(TRADERATE_TIME, "traderate_time", activity.traderate_time, "events", "time", _const(1), _time()),
    _family(QUOTERATE_TIME, "quoterate_time", activity.quoterate_time, "events", "time", _const(1), _time()),
    _family(IAT_TICK, "iat_tick", activity.iat_tick, "trades", "tick", _const(2), _ew("trades")),
    _family(SINCELARGE, "sincelarge", activity.sincelarge, "trades", "level", _const(4),
            lambda w: Warmup(trades=int(4 * activity.LARGE_TRADE_SPAN * max(1.0, w / 3.0)))),
)

assert [f.id for f in FAMILIES] == list(range(len(FAMILIES))), "family ids must match their order"
FAMILY_BY_NAME = {f.name: f for f in FAMILIES}
