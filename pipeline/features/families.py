"""The indicator families: each kernel with its stream, window unit, state size and warm-up.

A family plus a window is a base indicator (``rsi_tick_100``, ``rv_time_5s``). Its warm-up is what
it needs before its value no longer depends on where the computation started, to 1e-3 of its
scale (``pipeline.features.check`` measures exactly that, on synthetic and real BTC ticks):

- a ring-buffer window is exact after w + 1 updates;
- an EW average of span w forgets its start as exp(-2n / w), Wilder's 1/w smoothing as
  exp(-n / w), a time constant tau as exp(-t / tau). A restart's start-up error can be ~100 x the
  scale of a long average (whose spread shrinks like 1 / sqrt(w) against its input's), so the
  warm-ups wait for exp(-12): 6 w (EW_SPANS), 12 w for Wilder's and for the square root of an EW
  variance (bbz, bbw, trend), which forgets at half the rate where the input is flat;
- updates carry unequal information: returns only when the mid moves (on a liquid perp most
  book updates change sizes only), so return-based averages count mid moves; size- and
  notional-weighted ones need more spans for trades thousands of times the median (VOLUME_SPANS);
  time-decayed sums more time constants for bursts (TIME_CONSTANTS, VOLUME_TIME_CONSTANTS).

The earlier 4 w / 8 w / 7 tau, counted in quote updates, left errors of up to 2 % of the scale
(and several scales for RSI, autocorrelation and Hurst after a flat stretch) on real ticks.

The depth families (stream ``depth``, last in the list) read the L2 book summary at each depth
update and are computed per level count (``l2book.LEVELS``); their windows count depth updates and
their warm-ups do too (``Warmup.depth``). The book itself needs no warm-up: every summary is of the
whole book since the last snapshot (pipeline.features.l2book), which a daemon fetches on start.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pipeline.features.kernels import activity, book, depth, flow, price, trend

Stream = Literal["quotes", "trades", "events", "depth"]
Unit = Literal["tick", "time", "level"]

# Family ids, as the compiled dispatcher (pipeline.features.step) switches on them.
(
    RET_TICK, RET_TIME, RV_TICK, RV_TIME, TICKVOL_TICK, ATR_TICK, PARK_TICK, AUTOCORR_TICK,
    OFI_TICK, OFI_TIME, TSI_TICK, TSI_TIME, SV_TICK, SV_TIME, VOLSPIKE_TICK, VOLSPIKE_TIME,
    VWAPDEV_TICK, VWAPDEV_TIME, KYLE_TICK, AMIHUD_TICK, RSI_TICK, BBZ_TICK, BBW_TICK,
    EMASLOPE_TICK, EMACROSS_TICK, SMASLOPE_TICK, SMACROSS_TICK, MOMSTR_TICK, HURST_TICK,
    EFFRATIO_TICK, TREND_TICK, SPREADREL_L1, SPREAD_TICK, MICRODEV_L1, BOOKIMB_L1, BOOKIMB_TICK,
    TRADERATE_TIME, QUOTERATE_TIME, IAT_TICK, SINCELARGE,
    DEPTHIMB, DEPTHIMB_TICK, DEPTHMICRO, DEPTHSLOPE, DEPTHCONC, DEPTHFLOW_TICK,
) = range(46)
FIRST_DEPTH = DEPTHIMB  # families from here on run on depth updates only (pipeline.features.step)


EW_SPANS = 6.0  # warm-up of an EW average, in spans: exp(-2 x 6)
# Of a time-decayed sum, in time constants: exp(-12), and ln(1000) ~ 7 more because events come
# in bursts (a second of hundreds of trades, then silence): a burst just before the start can
# outweigh what follows a thousandfold. Rounded up to 20.
TIME_CONSTANTS = 20.0
# Averages weighted by trade size or notional (or of its inverse) forget in volume, not in trades:
# one trade ~3000 x the median size (on the real BTC perp and in the simulator alike) keeps its
# weight for ln(3000) / 2 ~ 4 spans more, or ln(3000) ~ 8 time constants.
VOLUME_SPANS = EW_SPANS + 4.0
VOLUME_TIME_CONSTANTS = TIME_CONSTANTS + 8.0


@dataclass(frozen=True)
class Warmup:
    """How much history an indicator needs: all of these must have been seen, and then
    ``after_events`` more events and ``after_depth`` more depth updates (a transform's own warm-up,
    which starts once its input is warm: counted in events, or for a depth feature, whose transform
    runs on depth updates, in depth updates). The counters are those of
    ``pipeline.features.engine.PROGRESS``."""

    quotes: int = 0
    trades: int = 0
    events: int = 0
    seconds: float = 0.0
    moves: int = 0  # quote updates that moved the mid
    depth: int = 0  # depth updates with a valid book
    after_events: int = 0
    after_depth: int = 0

    def __add__(self, other: Warmup) -> Warmup:
        return Warmup(
            self.quotes + other.quotes, self.trades + other.trades,
            self.events + other.events, self.seconds + other.seconds,
            self.moves + other.moves, self.depth + other.depth,
            self.after_events + other.after_events, self.after_depth + other.after_depth,
        )

    def scaled(self, factor: float) -> Warmup:
        return Warmup(
            math.ceil(self.quotes * factor), math.ceil(self.trades * factor), math.ceil(self.events * factor),
            self.seconds * factor, math.ceil(self.moves * factor), math.ceil(self.depth * factor),
            math.ceil(self.after_events * factor), math.ceil(self.after_depth * factor),
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

    @property
    def is_depth(self) -> bool:
        """Runs on depth updates only, and is computed for each level count of ``l2book.LEVELS``."""
        return self.stream == "depth"


def _ew(stream: Stream, factor: float = EW_SPANS) -> Callable[[float], Warmup]:
    def warmup(w: float) -> Warmup:
        n = int(factor * w) + 2
        return Warmup(quotes=n) if stream == "quotes" else Warmup(trades=n)

    return warmup


def _ew_moves(factor: float = EW_SPANS) -> Callable[[float], Warmup]:
    """An EW of returns learns only when the mid moves: while it stands still, all its averages
    decay together, and a ratio of them (RSI's up / down, an autocorrelation, a volatility
    against its start) keeps what the last moves said, however long ago. So factor x w mid moves
    (and as many quote updates)."""

    def warmup(w: float) -> Warmup:
        n = int(factor * w) + 2
        return Warmup(quotes=n, moves=n)

    return warmup


def _ew_depth(factor: float = EW_SPANS) -> Callable[[float], Warmup]:
    return lambda w: Warmup(depth=int(factor * w) + 2)


def _first_depth(w: float) -> Warmup:
    return Warmup(depth=1)


def _ring(w: float) -> Warmup:
    return Warmup(quotes=int(w) + 2)


def _time(factor: float = TIME_CONSTANTS, needs_book: bool = False, needs_trade: bool = False) -> Callable[[float], Warmup]:
    """A time constant's worth of seconds, and the quote or trade without which the value is NaN."""
    return lambda w: Warmup(quotes=int(needs_book), trades=int(needs_trade), seconds=factor * w)


def _const(size: int) -> Callable[[int], int]:
    return lambda w: size


def _doc(kernel: Callable) -> str:
    return (kernel.__doc__ or "").strip().split("\n")[0]


def _family(fid, name, kernel, stream, unit, size, warmup) -> Family:
    return Family(fid, name, kernel, stream, unit, size, warmup, _doc(kernel.py_func))


def _depth_family(fid, name, kernel, unit, size, warmup) -> Family:
    return _family(fid, name, kernel, "depth", unit, size, warmup)


FAMILIES: tuple[Family, ...] = (
    _family(RET_TICK, "ret_tick", price.ret_tick, "quotes", "tick", lambda w: w + 3, _ring),
    _family(RET_TIME, "ret_time", price.ret_time, "events", "time", _const(2), _time(needs_book=True)),
    _family(RV_TICK, "rv_tick", price.rv_tick, "quotes", "tick", _const(2), _ew_moves()),
    _family(RV_TIME, "rv_time", price.rv_time, "events", "time", _const(1), _time(needs_book=True)),
    _family(TICKVOL_TICK, "tickvol_tick", price.tickvol_tick, "quotes", "tick", _const(2), _ew_moves()),
    _family(ATR_TICK, "atr_tick", price.atr_tick, "trades", "tick", _const(2), _ew("trades")),
    _family(PARK_TICK, "park_tick", price.park_tick, "quotes", "tick", lambda w: 5 + 4 * w, _ring),
    _family(AUTOCORR_TICK, "autocorr_tick", price.autocorr_tick, "quotes", "tick", _const(5), _ew_moves()),
    _family(OFI_TICK, "ofi_tick", flow.ofi_tick, "quotes", "tick", _const(4), _ew("quotes")),
    _family(OFI_TIME, "ofi_time", flow.ofi_time, "events", "time", _const(2), _time(needs_book=True)),
    _family(TSI_TICK, "tsi_tick", flow.tsi_tick, "trades", "tick", _const(2), _ew("trades")),
    _family(TSI_TIME, "tsi_time", flow.tsi_time, "events", "time", _const(2), _time(needs_trade=True)),
    _family(SV_TICK, "sv_tick", flow.sv_tick, "trades", "tick", _const(4), _ew("trades", VOLUME_SPANS)),
    _family(SV_TIME, "sv_time", flow.sv_time, "events", "time", _const(2),
            _time(VOLUME_TIME_CONSTANTS, needs_trade=True)),
    _family(VOLSPIKE_TICK, "volspike_tick", flow.volspike_tick, "trades", "tick", _const(4),
            _ew("trades", 20.0 * VOLUME_SPANS)),
    _family(VOLSPIKE_TIME, "volspike_time", flow.volspike_time, "events", "time", _const(2),
            _time(20.0 * VOLUME_TIME_CONSTANTS, needs_trade=True)),
    _family(VWAPDEV_TICK, "vwapdev_tick", flow.vwapdev_tick, "trades", "tick", _const(4), _ew("trades", VOLUME_SPANS)),
    _family(VWAPDEV_TIME, "vwapdev_time", flow.vwapdev_time, "events", "time", _const(3),
            _time(VOLUME_TIME_CONSTANTS, needs_trade=True)),
    _family(KYLE_TICK, "kyle_tick", flow.kyle_tick, "trades", "tick", _const(8),
            _ew("trades", VOLUME_SPANS + 4.0)),  # a regression: weights are notional squared
    _family(AMIHUD_TICK, "amihud_tick", flow.amihud_tick, "trades", "tick", _const(2), _ew("trades", VOLUME_SPANS)),
    _family(RSI_TICK, "rsi_tick", trend.rsi_tick, "quotes", "tick", _const(4), _ew_moves(2.0 * EW_SPANS)),
    _family(BBZ_TICK, "bbz_tick", trend.bbz_tick, "quotes", "tick", _const(4), _ew_moves(2.0 * EW_SPANS)),
    _family(BBW_TICK, "bbw_tick", trend.bbw_tick, "quotes", "tick", _const(4), _ew_moves(2.0 * EW_SPANS)),
    _family(EMASLOPE_TICK, "emaslope_tick", trend.emaslope_tick, "quotes", "tick", _const(3), _ew("quotes")),
    _family(EMACROSS_TICK, "emacross_tick", trend.emacross_tick, "quotes", "tick", _const(4), _ew("quotes", 4.0 * EW_SPANS)),
    _family(SMASLOPE_TICK, "smaslope_tick", trend.smaslope_tick, "quotes", "tick", lambda w: w + 5, _ring),
    _family(SMACROSS_TICK, "smacross_tick", trend.smacross_tick, "quotes", "tick", lambda w: 5 * w + 7,
            lambda w: Warmup(quotes=4 * int(w) + 2)),
    _family(MOMSTR_TICK, "momstr_tick", trend.momstr_tick, "quotes", "tick", lambda w: w + 5, _ew_moves()),
    _family(HURST_TICK, "hurst_tick", trend.hurst_tick, "quotes", "tick", lambda w: w + 7,
            _ew_moves(EW_SPANS + 2.0)),  # an EW over the returns of a ring of w + 1
    _family(EFFRATIO_TICK, "effratio_tick", trend.effratio_tick, "quotes", "tick", lambda w: 2 * w + 6, _ring),
    _family(TREND_TICK, "trend_tick", trend.trend_tick, "quotes", "tick", _const(4), _ew_moves(2.0 * EW_SPANS)),
    _family(SPREADREL_L1, "spreadrel_l1", book.spreadrel_l1, "quotes", "level", _const(0), lambda w: Warmup(quotes=1)),
    _family(SPREAD_TICK, "spread_tick", book.spread_tick, "quotes", "tick", _const(2), _ew("quotes")),
    _family(MICRODEV_L1, "microdev_l1", book.microdev_l1, "quotes", "level", _const(0), lambda w: Warmup(quotes=1)),
    _family(BOOKIMB_L1, "bookimb_l1", book.bookimb_l1, "quotes", "level", _const(0), lambda w: Warmup(quotes=1)),
    _family(BOOKIMB_TICK, "bookimb_tick", book.bookimb_tick, "quotes", "tick", _const(2), _ew("quotes")),
    _family(TRADERATE_TIME, "traderate_time", activity.traderate_time, "events", "time", _const(1), _time()),
    _family(QUOTERATE_TIME, "quoterate_time", activity.quoterate_time, "events", "time", _const(1), _time()),
    _family(IAT_TICK, "iat_tick", activity.iat_tick, "trades", "tick", _const(2), _ew("trades")),
    _family(SINCELARGE, "sincelarge", activity.sincelarge, "trades", "level", _const(4),
            lambda w: Warmup(trades=int(EW_SPANS * activity.LARGE_TRADE_SPAN * max(1.0, w / 3.0)))),
    _depth_family(DEPTHIMB, "depthimb", depth.depthimb, "level", _const(0), _first_depth),
    _depth_family(DEPTHIMB_TICK, "depthimb_tick", depth.depthimb_tick, "tick", _const(2), _ew_depth()),
    _depth_family(DEPTHMICRO, "depthmicro", depth.depthmicro, "level", _const(0), _first_depth),
    _depth_family(DEPTHSLOPE, "depthslope", depth.depthslope, "level", _const(0), _first_depth),
    _depth_family(DEPTHCONC, "depthconc", depth.depthconc, "level", _const(0), _first_depth),
    # Size added or pulled is heavy-tailed like trade size (a 100 BTC order against a median of 1).
    _depth_family(DEPTHFLOW_TICK, "depthflow_tick", depth.depthflow_tick, "tick", _const(4),
                  _ew_depth(VOLUME_SPANS)),
)

assert [f.id for f in FAMILIES] == list(range(len(FAMILIES))), "family ids must match their order"
assert all(f.is_depth == (f.id >= FIRST_DEPTH) for f in FAMILIES), "depth families come last"
FAMILY_BY_NAME = {f.name: f for f in FAMILIES}
