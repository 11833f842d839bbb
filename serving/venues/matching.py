"""How our orders meet a replayed market that does not contain them.

Passive orders (resting limits) fill at their own price, as maker, once the volume ahead of them
has traded:

- queue ahead on arrival: 0 when the order improves its side's best price; the displayed size when
  it joins the touch; behind the touch, the depth at its level when the driver gives depth (0 for
  an empty level inside the depth shown), else ``behind_touch_fraction`` x the touch's size;
- a trade at the order's price by the other side (or of unknown side) eats the queue first, then the
  order: a partial fill when what is left of the trade is smaller than the order;
- a trade through the price, or the other side's quote reaching it, fills what is left: every order
  at that price has been taken;
- the displayed size at the order's price falling below the queue ahead caps it (orders ahead were
  cancelled); the best price moving behind the order leaves nobody ahead.

Taker orders (market, triggered stops, the marketable part of a limit) walk the book: the touch,
then the depth levels beyond it when known, then a synthetic book (``ImpactConfig``). Every fill
is at a price that quoted (the touch, a depth level, our own resting price), except beyond the
displayed book, where nobody knows the prices: there the synthetic book charges prices that are
strictly worse than all that was displayed, on the tick grid and within ``max_slippage_bps`` of
the touch: never better than what the data showed, and capped. Its part fills as one ``Fill`` at
the volume-weighted price of the synthetic levels, rounded on the grid against us.

Historical data does not contain our orders, so a second taker order before the next quote must
not take the same displayed size again: what we took from a side since the last quote is skipped.
"""

from __future__ import annotations

import math

from serving.events import Depth, Order
from serving.markets import Market

_EPS = 1e-9


class Resting:
    """One of our orders working at the venue: a resting limit or a waiting stop."""

    __slots__ = ("order", "side", "price", "remaining", "queue_ahead")

    def __init__(self, order: Order, remaining: float, queue_ahead: float) -> None:
        self.order, self.side, self.price = order, order.side, order.price
        self.remaining, self.queue_ahead = remaining, queue_ahead


def depth_at(levels: tuple[tuple[float, float], ...], side: int, price: float) -> float:
    """The displayed size at ``price`` on one side of the depth; 0.0 for an empty level inside the
    range shown, NaN beyond it (unknown)."""
    for level_px, qty in levels:
        if level_px == price:
            return qty
        if side * (level_px - price) < 0.0:  # past it: the level is empty
            return 0.0
    return math.nan


def queue_on_arrival(side: int, price: float, touch_px: float, touch_qty: float, depth: Depth | None,
                     behind_touch_fraction: float) -> float:  # fmt: skip
    """The volume ahead of a passive order as it starts to rest (module docstring)."""
    if side * (price - touch_px) > 0.0:
        return 0.0
    if price == touch_px:
        return touch_qty
    if depth is not None:
        known = depth_at(depth.bids if side > 0 else depth.asks, side, price)
        if known == known:
            return known
    return behind_touch_fraction * touch_qty


def walk(market: Market, side: int, qty: float, levels: list[tuple[float, float]], skip: float, worst_px: float,
         spacing_px: float, synthetic_qty: float) -> tuple[list[tuple[float, float]], float]:  # fmt: skip
    """Take ``qty`` from ``levels`` (best first, the touch first), then from the synthetic book
    beyond the last of them, never at a price beyond ``worst_px``; the first ``skip`` of volume is
    already gone. Returns the fills (price, qty) and what could not fill."""
    fills: list[tuple[float, float]] = []
    last = levels[0][0]
    for price, size in levels:
        if side * (price - worst_px) > 0.0:
            return fills, qty
        last = price
        if skip >= size:
            skip -= size
            continue
        size -= skip
        skip = 0.0
        take = market.floor_qty(size if size < qty else qty)
        if take > 0.0:
            fills.append((price, take))
            qty = market.clean_qty(qty - take)
        if qty <= 0.0:
            return fills, 0.0
    # The synthetic book: level k (k = 1, 2, ...) at last + side x k x spacing, synthetic_qty each.
    # ``skip`` left over is volume of it already taken. Level of the cumulative volume y:
    # floor(y / s) + 1, so the integral over [0, y] is F(y) below and the mean level over
    # [c, c + x] is (F(c + x) - F(c)) / x.
    s = synthetic_qty
    levels_allowed = math.floor(side * (worst_px - last) / spacing_px + _EPS)
    room = market.floor_qty(levels_allowed * s - skip)
    take = qty if qty < room else room
    if take <= 0.0:
        return fills, qty

    def integral(y: float) -> float:
        n = math.floor(y / s + _EPS)
        return s * n * (n + 1) / 2.0 + (y - n * s) * (n + 1)

    mean_level = (integral(skip + take) - integral(skip)) / take
    raw = last + side * spacing_px * mean_level
    price = market.ceil_price(raw) if side > 0 else market.floor_price(raw)
    if side * (price - worst_px) > 0.0:
        price = worst_px
    fills.append((price, take))
    return fills, market.clean_qty(qty - take)
