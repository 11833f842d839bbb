"""The candidate indicators: families x (level counts x) windows x transforms, each with a stable name.

Names read ``<family>[_l<levels>]_<window>[_<transform>]``: ``rsi_tick_100`` (RSI over 100 quote
updates), ``rv_time_5s`` (realised volatility, 5 s time constant), ``ofi_tick_200_z2000``
(order-flow imbalance z-scored over 2000 events), ``spreadrel_l1`` (level-1 book, no window),
``sincelarge_x5`` (time since a trade 5x the mean size), ``depthimb_l10`` (book imbalance over the
best 10 levels), ``depthflow_tick_l5_200_z200`` (order flow over the best 5 levels, span 200 depth
updates, z-scored over 200 depth updates: a depth feature's windows and transforms count depth
updates, as it runs on those only).

A list of names compiles to a ``Program``: the arrays the compiled step runs, the state size and
every feature's declared warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from pipeline.errors import AutoscalpError
from pipeline.features.families import EW_SPANS, FAMILIES, Family, Warmup
from pipeline.features.l2book import LEVELS
from pipeline.features.step import DEVIATION, RAW, TRANSFORM_STATE, ZSCORE

TICK_WINDOWS = (5, 10, 20, 50, 100, 200, 500, 1000, 2000)
# Fewer for depth (x 4 level counts): neighbouring spans of a slow-moving depth average are
# near-copies that the selection's Spearman pruning drops anyway.
DEPTH_TICK_WINDOWS = (10, 50, 200, 1000)
TIME_WINDOWS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
LARGE_TRADE_MULTIPLES = (3.0, 5.0, 10.0)
# (suffix, transform id, span in events). The z-scores make level-dependent indicators
# comparable across regimes; the deviation removes a slow drift.
TRANSFORMS = (("", RAW, 0.0), ("_z200", ZSCORE, 200.0), ("_z2000", ZSCORE, 2000.0), ("_d50", DEVIATION, 50.0))


WARMUP_COLUMNS = 8  # Program.warmup


class UnknownFeatureError(AutoscalpError):
    pass


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    family: Family
    window: float  # updates of the family's stream, seconds, or a multiple (sincelarge)
    transform: int
    transform_span: float
    warmup: Warmup
    levels: int = 0  # book levels a depth feature aggregates (0: not a depth feature)

    @property
    def base_name(self) -> str:
        return self.name.removesuffix(_suffix(self.transform, self.transform_span))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "family": self.family.name,
            "unit": self.family.unit,
            "stream": self.family.stream,
            "window": self.window,
            "levels": self.levels,
            "transform": _suffix(self.transform, self.transform_span).lstrip("_") or "raw",
            "warmup_quotes": self.warmup.quotes,
            "warmup_trades": self.warmup.trades,
            "warmup_events": self.warmup.events,
            "warmup_seconds": self.warmup.seconds,
            "warmup_moves": self.warmup.moves,
            "warmup_depth": self.warmup.depth,
            "warmup_after_events": self.warmup.after_events,
            "warmup_after_depth": self.warmup.after_depth,
            "description": self.family.description,
        }


def _suffix(transform: int, span: float) -> str:
    for suffix, tid, tspan in TRANSFORMS:
        if tid == transform and tspan == span:
            return suffix
    return ""


def window_label(family: Family, window: float) -> str:
    if family.unit == "tick":
        return f"_{int(window)}"
    if family.unit == "time":
        return f"_{int(window * 1000)}ms" if window < 1 else f"_{int(window)}s"
    if family.name == "sincelarge":
        return f"_x{int(window)}"
    return ""


def _windows(family: Family) -> tuple[float, ...]:
    if family.unit == "tick":
        return tuple(float(w) for w in (DEPTH_TICK_WINDOWS if family.is_depth else TICK_WINDOWS))
    if family.unit == "time":
        return TIME_WINDOWS
    if family.name == "sincelarge":
        return LARGE_TRADE_MULTIPLES
    return (0.0,)


TRANSFORMED_INPUT_WARMUP = 1.5


def _input_warmup(family: Family, window: float, transform: int) -> Warmup:
    """The warm-up of a feature's untransformed indicator. A transform measures its input's
    variation over its span, which for a slow input is far smaller than the input's own scale (a
    2000-trade Kyle lambda moves little in 50 events): 1e-3 of the transform's scale needs the
    input's start-up residue ~20 x smaller than 1e-3 of its own, so it warms 1.5 x longer
    (exp(-18) instead of exp(-12) for an EW)."""
    warmup = family.warmup(window)
    return warmup if transform == RAW else warmup.scaled(TRANSFORMED_INPUT_WARMUP)


def _transform_warmup(family: Family, transform: int, span: float) -> Warmup:
    """A transform is an EW over events fed once its input is warm (pipeline.features.step): it
    needs its spans of events after the input's warm-up, not merely since the start (a z-score
    started as its input warms up holds the square of the input's start-up swings). A z-score's
    deviation is the square root of an EW variance, so where its input is flat a start-up error
    decays at half the rate: twice the spans. A depth feature's transform runs on depth updates:
    its spans are counted in those."""
    spans = 2.0 * EW_SPANS if transform == ZSCORE else EW_SPANS
    if family.is_depth:
        return Warmup(after_depth=int(spans * span))
    return Warmup(after_events=int(spans * span))


@cache
def catalog() -> dict[str, FeatureSpec]:
    """Every candidate indicator by name, in a stable order."""
    specs: dict[str, FeatureSpec] = {}
    for family in FAMILIES:
        for levels in (tuple(int(n) for n in LEVELS) if family.is_depth else (0,)):
            for window in _windows(family):
                base = f"{family.name}{f'_l{levels}' if levels else ''}{window_label(family, window)}"
                for suffix, tid, span in TRANSFORMS:
                    warmup = _input_warmup(family, window, tid) + _transform_warmup(family, tid, span)
                    specs[base + suffix] = FeatureSpec(base + suffix, family, window, tid, span, warmup, levels)
    return specs


def resolve(names: list[str] | tuple[str, ...]) -> list[FeatureSpec]:
    specs = catalog()
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise UnknownFeatureError(
            f"unknown feature {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + "; `autoscalp features list` shows every name"
        )
    return [specs[n] for n in names]


@dataclass(frozen=True)
class Program:
    names: tuple[str, ...]
    iprog: np.ndarray  # int64 [k, 4]: family id, transform id, base state offset, transform offset
    # float64 [k, 9]: window, transform span, the base indicator's warm-up (the 6 PROGRESS
    # counters: quotes, trades, events, seconds, moves, depth), book levels
    fprog: np.ndarray
    state_size: int
    warmup: np.ndarray  # float64 [k, 8]: the 6 counters, after_events, after_depth

    def new_state(self) -> np.ndarray:
        return np.zeros(self.state_size, dtype=np.float64)

    def max_warmup(self) -> Warmup:
        """Enough for every feature (each part the largest, so maybe more than any one needs)."""
        top = self.warmup.max(axis=0) if len(self.names) else np.zeros(WARMUP_COLUMNS)
        return Warmup(int(top[0]), int(top[1]), int(top[2]), float(top[3]), int(top[4]), int(top[5]),
                      int(top[6]), int(top[7]))


def compile_program(names: list[str] | tuple[str, ...]) -> Program:
    specs = resolve(names)
    iprog = np.zeros((len(specs), 4), dtype=np.int64)
    fprog = np.zeros((len(specs), 9), dtype=np.float64)
    warmup = np.zeros((len(specs), WARMUP_COLUMNS), dtype=np.float64)
    offset = 0
    for k, spec in enumerate(specs):
        base_size = spec.family.state_size(int(spec.window))
        iprog[k] = (spec.family.id, spec.transform, offset, offset + base_size)
        b = _input_warmup(spec.family, spec.window, spec.transform)
        fprog[k] = (spec.window, spec.transform_span, b.quotes, b.trades, b.events, b.seconds, b.moves, b.depth,
                    spec.levels)
        offset += base_size + TRANSFORM_STATE[spec.transform]
        w = spec.warmup
        warmup[k] = (w.quotes, w.trades, w.events, w.seconds, w.moves, w.depth, w.after_events, w.after_depth)
    return Program(tuple(names), iprog, fprog, offset, warmup)
