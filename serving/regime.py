"""Market regime per symbol (normal, trending, ranging, volatile) from features, with hysteresis.

Raw reading, in priority order: volatile when short volatility runs well above long volatility;
trending when price moves efficiently with a significant drift; ranging when it moves
inefficiently without drift; normal otherwise. A regime is left on a weaker reading than the one
that entered it, and a new reading must hold ``confirm_ticks`` consecutive ticks after the current
regime has lasted ``min_dwell_ms`` before it switches. A NaN input keeps the current regime: no
information is not a reason to switch.
"""

from __future__ import annotations

from serving.config import RegimeConfig

NORMAL, TRENDING, RANGING, VOLATILE = 0, 1, 2, 3
REGIMES = ("normal", "trending", "ranging", "volatile")


class RegimeDetector:
    __slots__ = (
        "regime", "since_ns", "_pending", "_count", "_vol_in", "_vol_out", "_eff_in", "_eff_out",
        "_str_in", "_str_out", "_range_in", "_range_out", "_range_str", "_confirm", "_dwell_ns",
    )  # fmt: skip

    def __init__(self, config: RegimeConfig) -> None:
        self.regime = NORMAL
        self.since_ns = -1  # set by the first reading
        self._pending = NORMAL
        self._count = 0
        self._vol_in, self._vol_out = config.vol_ratio_enter, config.vol_ratio_exit
        self._eff_in, self._eff_out = config.trend_efficiency_enter, config.trend_efficiency_exit
        self._str_in, self._str_out = config.trend_strength_enter, config.trend_strength_exit
        self._range_in, self._range_out = config.range_efficiency_enter, config.range_efficiency_exit
        self._range_str = config.range_strength_max
        self._confirm = config.confirm_ticks
        self._dwell_ns = config.min_dwell_ms * 1_000_000

    def classify(self, vol_ratio: float, efficiency: float, trend_strength: float) -> int:
        """The raw regime of one reading, with the current regime's (easier) exit thresholds."""
        current = self.regime
        if vol_ratio >= (self._vol_out if current == VOLATILE else self._vol_in):
            return VOLATILE
        strength = abs(trend_strength)
        if current == TRENDING:
            if efficiency >= self._eff_out and strength >= self._str_out:
                return TRENDING
        elif efficiency >= self._eff_in and strength >= self._str_in:
            return TRENDING
        if efficiency <= (self._range_out if current == RANGING else self._range_in) and strength <= self._range_str:
            return RANGING
        return NORMAL

    def update(self, ts_ns: int, vol_ratio: float, efficiency: float, trend_strength: float) -> int:
        """Fold one tick's reading in; returns the previous regime when it switched, else -1."""
        if self.since_ns < 0:
            self.since_ns = ts_ns
        if vol_ratio != vol_ratio or efficiency != efficiency or trend_strength != trend_strength:
            return -1
        raw = self.classify(vol_ratio, efficiency, trend_strength)
        if raw == self.regime:
            self._count = 0
            return -1
        if raw == self._pending:
            self._count += 1
        else:
            self._pending, self._count = raw, 1
        if self._count >= self._confirm and ts_ns - self.since_ns >= self._dwell_ns:
            previous = self.regime
            self.regime, self.since_ns, self._count = raw, ts_ns, 0
            return previous
        return -1
