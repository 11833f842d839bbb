"""Dynamic leverage: how much notional, as a multiple of equity, a symbol may carry.

Modes: conservative and aggressive are fixed multiples; adaptive is ``adaptive_base`` times

- volatility:  target_rv / rv_fast, in [0.25, 2]     (volatility targeting)
- spread:      ref_spread / spread when wider, >= 0.5 (a wide spread is thin, costly liquidity)
- depth:       depth / ref_depth when thinner, >= 0.5 (the top of book we would have to hit)
- confidence:  0.5 + |2 p_up - 1| / confidence_full, in [0.5, 1.5]
- drawdown:    1 - drawdown_sensitivity x drawdown, >= 0.25
- win rate:    1 + win_rate_gain x (win rate - 0.5), in [0.75, 1.25] (1 until enough trades)

clamped to [adaptive_min, adaptive_max], then smoothed (exponentially: over ``rise_ticks`` when it
rises, ``fall_ticks`` when it falls), since the model's confidence and the top of book jump from tick
to tick and a leverage that flaps would resize orders on every tick.

Whatever the mode, an emergency multiplies the result by ``emergency_factor`` for
``emergency_cooldown_ms``: a volatility shock (rv_fast / rv_slow above ``vol_shock_ratio``) or each
new ``drawdown_step_pct`` of drawdown. The result is capped by min(exchange max leverage,
per-symbol cap, portfolio cap); the portfolio cap is applied again where orders are sized and
vetoed, net of the other symbols' exposure. The engine trims open positions that stand above the
(new) leverage, so an emergency reduces exposure, not only new orders.
"""

from __future__ import annotations

from serving.config import LeverageConfig
from serving.features import TickView


class LeverageManager:
    __slots__ = ("_mode", "_fixed", "_base", "_min", "_max", "_target_rv", "_ref_spread", "_ref_depth",
                 "_conf_full", "_dd_sens", "_win_gain", "win_min_trades", "shock_ratio", "_dd_step", "_factor",
                 "_cooldown_ns", "emergency_until_ns", "_dd_steps", "_rise", "_fall")  # fmt: skip

    def __init__(self, config: LeverageConfig) -> None:
        self._mode = config.mode
        self._fixed = config.conservative if config.mode == "conservative" else config.aggressive
        self._base, self._min, self._max = config.adaptive_base, config.adaptive_min, config.adaptive_max
        self._rise, self._fall = 2.0 / (config.rise_ticks + 1), 2.0 / (config.fall_ticks + 1)
        self._target_rv = config.target_rv
        self._ref_spread, self._ref_depth = config.ref_spread_bps * 1e-4, config.ref_depth_usdt
        self._conf_full, self._dd_sens = config.confidence_full, config.drawdown_sensitivity
        self._win_gain, self.win_min_trades = config.win_rate_gain, config.win_rate_min_trades
        self.shock_ratio, self._dd_step = config.vol_shock_ratio, config.drawdown_step_pct * 1e-2
        self._factor, self._cooldown_ns = config.emergency_factor, config.emergency_cooldown_ms * 1_000_000
        self.emergency_until_ns = -1
        self._dd_steps = 0

    def check_emergency(self, now_ns: int, vol_ratio: float, drawdown: float) -> str:
        """A note when a new emergency starts (a running one is extended silently), else ''."""
        why = ""
        if vol_ratio >= self.shock_ratio:
            why = f"volatility shock (rv_fast / rv_slow = {vol_ratio:.2f})"
        steps = int(drawdown / self._dd_step) if drawdown > 0.0 else 0
        if steps > self._dd_steps:
            why = f"drawdown step {steps} ({drawdown:.2%})"
        self._dd_steps = steps  # a recovery re-arms the lower steps
        if not why:
            return ""
        starts = now_ns >= self.emergency_until_ns
        self.emergency_until_ns = now_ns + self._cooldown_ns
        return f"emergency leverage cut: {why}" if starts else ""

    def step_changes(self, drawdown: float) -> bool:
        """Whether ``check_emergency`` would see another drawdown step than the last (the engine
        skips the call otherwise: without a volatility shock it would do nothing)."""
        return int(drawdown / self._dd_step) != self._dd_steps

    def target(self, view: TickView, drawdown: float, win_rate: float, previous: float) -> float:
        """The mode's leverage for one symbol this tick, before emergency and caps. With NaN
        features adaptive keeps its previous value (no entry happens on such a tick anyway)."""
        if self._mode != "adaptive":
            lev = self._fixed
        elif not view.finite or view.p_up != view.p_up:
            lev = previous
        else:
            lev = self._base
            rv = view.rv_fast
            f = self._target_rv / rv if rv > 0.0 else 2.0
            lev *= 0.25 if f < 0.25 else 2.0 if f > 2.0 else f
            spread = view.spread_rel
            if spread > self._ref_spread:
                f = self._ref_spread / spread
                lev *= f if f > 0.5 else 0.5
            depth = (view.bid_qty if view.bid_qty < view.ask_qty else view.ask_qty) * view.mid
            if depth < self._ref_depth:
                f = depth / self._ref_depth
                lev *= f if f > 0.5 else 0.5
            f = 0.5 + abs(2.0 * view.p_up - 1.0) / self._conf_full
            lev *= 1.5 if f > 1.5 else f
            f = 1.0 - self._dd_sens * drawdown
            lev *= f if f > 0.25 else 0.25
            if win_rate == win_rate:
                f = 1.0 + self._win_gain * (win_rate - 0.5)
                lev *= 0.75 if f < 0.75 else 1.25 if f > 1.25 else f
            lev = self._min if lev < self._min else self._max if lev > self._max else lev
            if previous == previous:
                lev = previous + (self._rise if lev > previous else self._fall) * (lev - previous)
        return lev

    def capped(self, target: float, now_ns: int, cap: float) -> float:
        """The leverage in force: the target, cut during an emergency, never above the cap."""
        lev = target * self._factor if now_ns < self.emergency_until_ns else target
        if lev != lev:  # a NaN target (no reading yet): the safest footing
            return 0.0
        return cap if lev > cap else lev
