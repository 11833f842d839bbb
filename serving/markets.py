"""Exchange grid rules of one symbol: prices on the tick, quantities on the lot.

k x 0.1 is not always the double nearest the decimal (3 x 0.1 = 0.30000000000000004) but k / 10
is, so a grid value is k / (1 / step) when 1 / step is a whole number (every power-of-ten step), and
k x step rounded to the step's decimals otherwise; the exchange would reject (or silently alter) an
off-grid price.
"""

from __future__ import annotations

import math

from serving.events import MarketLimits

_EPS = 1e-9  # a value within a billionth of a step of the grid is on it


def _inverse(step: float) -> float:
    """1 / step when it is a whole number (0.1 -> 10.0), else 0.0."""
    inverse = round(1.0 / step)
    return float(inverse) if inverse >= 1 and abs(inverse * step - 1.0) < 1e-12 else 0.0


class Grid:
    """Values on multiples of one step."""

    __slots__ = ("step", "_inv", "_dp")

    def __init__(self, step: float) -> None:
        self.step = step = float(step)
        self._inv = _inverse(step)
        self._dp = max(0, -math.floor(math.log10(step) + _EPS)) + 2

    def _value(self, k: float) -> float:
        return k / self._inv if self._inv else round(k * self.step, self._dp)

    def floor(self, x: float) -> float:
        return self._value(math.floor(x / self.step + _EPS))

    def ceil(self, x: float) -> float:
        return self._value(math.ceil(x / self.step - _EPS))

    def nearest(self, x: float) -> float:
        return self._value(round(x / self.step))


class Market:
    __slots__ = ("symbol", "tick", "lot", "min_notional", "max_leverage", "mmr", "_price", "_qty")

    def __init__(self, limits: MarketLimits) -> None:
        if not (limits.tick_size > 0 and limits.lot_size > 0 and limits.max_leverage > 0):
            raise ValueError(f"{limits.symbol}: tick size, lot size and max leverage must be positive")
        self.symbol = limits.symbol
        self.tick, self.lot = limits.tick_size, limits.lot_size
        self.min_notional = limits.min_notional_usdt
        self.max_leverage = limits.max_leverage
        self.mmr = limits.maint_margin_rate
        self._price, self._qty = Grid(self.tick), Grid(self.lot)

    def floor_price(self, price: float) -> float:
        return self._price.floor(price)

    def ceil_price(self, price: float) -> float:
        return self._price.ceil(price)

    def floor_qty(self, qty: float) -> float:
        return self._qty.floor(qty)

    def ceil_qty(self, qty: float) -> float:
        return self._qty.ceil(qty)

    def clean_qty(self, qty: float) -> float:
        """A position after float arithmetic, back on the lot grid (so flat is exactly 0.0)."""
        return self._qty.nearest(qty)
