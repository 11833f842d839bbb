"""Momentum breakout: join a break of the Bollinger band confirmed by a volume spike, momentum
strength, an efficient move and the model, all in the same direction."""

from __future__ import annotations

from serving.config import MomentumBreakoutConfig
from serving.features import TickView
from serving.strategies.base import Strategy


class MomentumBreakout(Strategy):
    __slots__ = ("_z", "_spike", "_momentum", "_efficiency", "_edge", "_exit_momentum")

    def __init__(self, config: MomentumBreakoutConfig) -> None:
        super().__init__("momentum_breakout", config)
        self._z, self._spike = config.breakout_z, config.vol_spike_min
        self._momentum, self._efficiency = config.momentum_min, config.min_efficiency
        self._edge, self._exit_momentum = config.model_edge, config.exit_momentum

    def entry_side(self, view: TickView) -> int:
        z = view.bb_z
        side = 1 if z >= self._z else -1 if z <= -self._z else 0
        if (
            side
            and view.vol_spike >= self._spike
            and side * view.momentum >= self._momentum
            and view.efficiency >= self._efficiency
            and side * (view.p_up - 0.5) >= self._edge
        ):
            return side
        return 0

    def should_exit(self, view: TickView, side: int) -> bool:
        # The breakout failed: momentum now runs the other way.
        return side * view.momentum <= -self._exit_momentum
