"""The shared base of the strategies.

A strategy only decides: whether to enter and which way (``entry_side``), whether its open
position should go (``should_exit``), or, for a market maker, where to quote (``quotes``). The
engine sizes, prices, rounds and manages the orders, and every order passes the risk manager. A
strategy reads the TickView only after the engine checked every feature is finite, except
``should_exit``, which must treat NaN as "no exit" (comparisons with NaN are False, so the rules
below do that by construction).
"""

from __future__ import annotations

from serving.features import TickView
from serving.risk.trailing import TrailingRule

NO_QUOTE = 0.0  # a quote price of 0.0: do not quote that side


class Strategy:
    __slots__ = ("name", "stop_loss_rel", "order_fraction", "trailing", "entry_type", "entry_timeout_ns")
    makes_markets = False

    def __init__(self, name: str, config) -> None:
        self.name = name
        self.stop_loss_rel = config.stop_loss_bps * 1e-4
        self.order_fraction = getattr(config, "order_fraction", 0.0)
        self.trailing = TrailingRule(config.trailing)
        self.entry_type = getattr(config, "entry_type", "limit")
        self.entry_timeout_ns = getattr(config, "entry_timeout_ms", 0) * 1_000_000

    def entry_side(self, view: TickView) -> int:
        """+1 to buy, -1 to sell, 0 to stay out."""
        return 0

    def should_exit(self, view: TickView, side: int) -> bool:
        """True when the open position (side +1 long, -1 short) should be closed now."""
        return False

    def quotes(self, view: TickView, inventory_ratio: float) -> tuple[float, float, float]:
        """(bid, ask, relative half-spread) for a market maker, NO_QUOTE for a side it pulls."""
        return NO_QUOTE, NO_QUOTE, 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"
