"""Mean reversion: fade a short-term overreaction when the model agrees it will revert."""

from __future__ import annotations

from serving.config import MeanReversionConfig
from serving.features import TickView
from serving.strategies.base import Strategy


class MeanReversion(Strategy):
    __slots__ = ("_rsi", "_z", "_vwap", "_needed", "_edge", "_exit_z")

    def __init__(self, config: MeanReversionConfig) -> None:
        super().__init__("mean_reversion", config)
        self._rsi, self._z = config.rsi_extreme, config.bb_z_extreme
        self._vwap = config.vwap_dev_bps * 1e-4
        self._needed = config.min_confirmations
        self._edge = config.model_edge
        self._exit_z = config.exit_z

    def entry_side(self, view: TickView) -> int:
        rsi, z, dev = view.rsi, view.bb_z, view.vwap_dev
        oversold = (rsi <= -self._rsi) + (z <= -self._z) + (dev <= -self._vwap)
        if oversold >= self._needed and view.p_up >= 0.5 + self._edge:
            return 1
        overbought = (rsi >= self._rsi) + (z >= self._z) + (dev >= self._vwap)
        if overbought >= self._needed and view.p_up <= 0.5 - self._edge:
            return -1
        return 0

    def should_exit(self, view: TickView, side: int) -> bool:
        # Back at the mean: the overreaction it faded is gone.
        return side * view.bb_z >= -self._exit_z
