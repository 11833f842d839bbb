"""Trailing take-profit in six modes.

A trailing stop arms once the open profit reaches the activation threshold. From then its exit
level sits a distance behind the best price seen (for a long: best x (1 - distance)), where the
distance depends on the mode:

- fixed:      a constant, ``fixed_bps``;
- atr:        ``atr_mult`` x the ATR (relative);
- momentum:   ``momentum_bps``, multiplied by ``momentum_tighten`` while momentum runs against the
              position beyond ``momentum_reversal`` (a reversal: give back less);
- volatility: ``vol_mult`` x rv_fast x sqrt(``vol_horizon_ticks``): the noise of the horizon;
- ml:         ``ml_mult`` x the model's predicted absolute move (``fixed_bps`` when it has none);
- tick:       ``tick_mult`` x the recent tick volatility, in whole ticks, at least ``min_ticks``.

Every distance is clamped to [min_distance, max_distance]. The level only ever tightens, and
never sits below the entry plus ``lock_fraction`` of the best profit: once armed, the position
keeps at least that share of its best profit (before slippage). A NaN input leaves the level where
it was. The position exits when the exit-side price (bid for a long, ask for a short) touches it.
"""

from __future__ import annotations

import math

from serving.config import TrailingConfig
from serving.features import TickView

MODES = ("fixed", "atr", "momentum", "volatility", "ml", "tick")
FIXED, ATR, MOMENTUM, VOLATILITY, ML, TICK = range(6)


class TrailingRule:
    """One strategy's trailing settings, as plain floats."""

    __slots__ = ("mode", "activation", "lock", "_fixed", "_atr", "_momentum", "_reversal", "_tighten",
                 "_vol", "_ml", "_tick", "_min_ticks", "_min", "_max")  # fmt: skip

    def __init__(self, config: TrailingConfig) -> None:
        self.mode = MODES.index(config.mode)
        self.activation = config.activation_bps * 1e-4
        self.lock = config.lock_fraction
        self._fixed = config.fixed_bps * 1e-4
        self._atr = config.atr_mult
        self._momentum = config.momentum_bps * 1e-4
        self._reversal, self._tighten = config.momentum_reversal, config.momentum_tighten
        self._vol = config.vol_mult * math.sqrt(config.vol_horizon_ticks)
        self._ml = config.ml_mult
        self._tick, self._min_ticks = config.tick_mult, config.min_ticks
        self._min, self._max = config.min_distance_bps * 1e-4, config.max_distance_bps * 1e-4

    def distance(self, view: TickView, side: int, price: float) -> float:
        """The trailing distance, relative to price (NaN when the mode's input is NaN)."""
        mode = self.mode
        if mode == FIXED:
            d = self._fixed
        elif mode == ATR:
            d = self._atr * view.atr
        elif mode == MOMENTUM:
            d = self._momentum * self._tighten if side * view.momentum <= -self._reversal else self._momentum
        elif mode == VOLATILITY:
            d = self._vol * view.rv_fast
        elif mode == ML:
            move = view.predicted_move
            d = self._ml * move if move > 0.0 else self._fixed  # NaN compares False: the fallback
        else:
            tick, tick_vol_bps = view.tick_size, view.tick_vol
            if tick_vol_bps == tick_vol_bps and tick_vol_bps < math.inf:
                ticks = max(math.ceil(self._tick * tick_vol_bps * 1e-4 * price / tick), self._min_ticks)
                d = ticks * tick / price
            else:
                d = math.nan
        if d < self._min:
            return self._min
        return self._max if d > self._max else d


class TrailingStop:
    """The trailing state of one open position."""

    __slots__ = ("rule", "side", "entry", "best", "level", "active")

    def __init__(self, rule: TrailingRule, side: int, entry: float) -> None:
        self.rule, self.side, self.entry = rule, side, entry
        self.best = entry
        self.level = math.nan
        self.active = False

    def update(self, view: TickView, price: float) -> bool:
        """Fold in the exit-side price; True when the position should exit now."""
        side, rule = self.side, self.rule
        if side * (price - self.best) > 0.0:
            self.best = price
        best = self.best
        if not self.active:
            if side * (best - self.entry) < rule.activation * self.entry:
                return False
            self.active = True
        locked = self.entry + rule.lock * (best - self.entry)
        d = rule.distance(view, side, price)
        candidate = best * (1.0 - side * d) if d == d else locked
        # The tighter of the trail and the lock, and never looser than before.
        new = max(candidate, locked) if side > 0 else min(candidate, locked)
        level = self.level
        if level != level or side * (new - level) > 0.0:
            self.level = level = new
        return side * (price - level) <= 0.0
