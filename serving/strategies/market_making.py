"""Market making: quote both sides around the microprice.

The half-spread covers volatility (a quote must earn more than the move it risks while it rests).
The side the top of book leans against is widened (a lopsided book predicts the next move: a heavy
ask side means the bid is about to be hit), and the side the recent order flow runs against is
pulled altogether (flow is the stronger, smoother signal; the L1 imbalance flips on every tick).
The quote centre leans against inventory (to unwind it) and with the model's direction (to be
filled on the side the model expects to win). The engine replaces a resting quote at once when the
target moved away from it (the quote is now too aggressive: an adverse move) by ``adverse_requote``
half-spreads, but only after a larger move (``passive_requote``) the other way: each replacement
costs queue position and rate limit, and a quote that is merely too passive risks nothing. A side
at the inventory limit is not quoted.
"""

from __future__ import annotations

from serving.config import MarketMakingConfig
from serving.features import TickView
from serving.strategies.base import NO_QUOTE, Strategy


class MarketMaking(Strategy):
    __slots__ = ("_min_half", "_vol", "_imb", "_inv_skew", "_model_skew", "_adverse_ofi", "quote_fraction",
                 "max_inventory_fraction", "adverse_requote", "passive_requote")  # fmt: skip
    makes_markets = True

    def __init__(self, config: MarketMakingConfig) -> None:
        super().__init__("market_making", config)
        self._min_half = config.min_half_spread_bps * 1e-4
        self._vol, self._imb = config.vol_spread_mult, config.imbalance_spread_mult
        self._inv_skew, self._model_skew = config.inventory_skew, config.model_skew
        self._adverse_ofi = config.adverse_ofi
        self.quote_fraction = config.quote_fraction
        self.max_inventory_fraction = config.max_inventory_fraction
        self.adverse_requote, self.passive_requote = config.adverse_requote, config.passive_requote

    def quotes(self, view: TickView, inventory_ratio: float) -> tuple[float, float, float]:
        half = self._vol * view.rv_fast  # the base half-spread, relative, before the imbalance widening
        if not half > self._min_half:
            half = self._min_half
        lean = self._model_skew * (2.0 * view.p_up - 1.0) - self._inv_skew * inventory_ratio
        centre = view.microprice * (1.0 + lean * half)
        imbalance, ofi = view.book_imbalance, view.ofi
        widen = self._imb * abs(imbalance) * half
        bid = ask = NO_QUOTE
        if inventory_ratio < 1.0 and ofi > -self._adverse_ofi:
            bid = centre * (1.0 - half - (widen if imbalance < 0.0 else 0.0))
        if inventory_ratio > -1.0 and ofi < self._adverse_ofi:
            ask = centre * (1.0 + half + (widen if imbalance > 0.0 else 0.0))
        return bid, ask, half
