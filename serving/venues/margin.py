"""Isolated margin of a Binance USD-M perpetual: maintenance tiers, the liquidation price and the
notional a leverage allows.

Maintenance margin = notional x mmr - cum, with the tier (bracket) of the position's notional; cum,
Binance's "maintenance amount", keeps that piecewise-linear function continuous (see
``serving/venues/config.check_tiers``).

Liquidation price of an isolated position (Binance FAQ "How to Calculate Liquidation Price of
USDⓈ-M Futures Contracts", one-way mode; isolated: TMM = UPNL = 0)::

    LP = (WB + cum - side x Q x EP) / (Q x mmr - side x Q)

WB the position's isolated margin, Q its size, EP its entry price, side +1 long / -1 short: the price
at which margin + unrealised PnL = maintenance margin. Fees and funding still to pay are ignored,
as there. The tier is the one of the notional *at the liquidation price* (the FAQ: when the levels at
the entry and at the liquidation price differ, use the latter's). One tier always fits:
maintenance margin is convex in notional, and margin + PnL moves faster with the price than it
(slope Q against Q x mmr), so their difference crosses zero exactly once.
"""

from __future__ import annotations

from typing import Sequence

from serving.venues.config import MarginTier

_INF = float("inf")


def tier_of(tiers: Sequence[MarginTier], notional_usdt: float) -> MarginTier:
    found = tiers[0]
    for tier in tiers:
        if tier.floor_usdt > notional_usdt:
            break
        found = tier
    return found


def maintenance_margin(tiers: Sequence[MarginTier], notional_usdt: float) -> float:
    tier = tier_of(tiers, notional_usdt)
    return notional_usdt * tier.maint_margin_rate - tier.maint_amount_usdt


def liquidation_price(tiers: Sequence[MarginTier], side: int, qty: float, entry: float, margin_usdt: float) -> float:
    """Binance's isolated liquidation price; 0.0 when a long cannot be liquidated (the price would
    be <= 0). ``qty`` is the size (positive), ``side`` the position's direction."""
    best, miss = 0.0, _INF
    for i, tier in enumerate(tiers):
        mmr, cum = tier.maint_margin_rate, tier.maint_amount_usdt
        if side > 0:
            price = (qty * entry - margin_usdt - cum) / (qty * (1.0 - mmr))
        else:
            price = (qty * entry + margin_usdt + cum) / (qty * (1.0 + mmr))
        notional = qty * price
        cap = tiers[i + 1].floor_usdt if i + 1 < len(tiers) else _INF
        # the distance of this tier's solution from the tier: 0 inside it; rounding can put the
        # true one a hair outside its tier at a boundary, where both neighbours agree anyway
        off = tier.floor_usdt - notional if notional < tier.floor_usdt else (notional - cap if notional >= cap else 0.0)
        if off < miss:
            best, miss = price, off
            if off == 0.0:
                break
    return best if best > 0.0 else 0.0


def max_notional(tiers: Sequence[MarginTier], leverage: float) -> float:
    """The largest position notional this leverage allows: up to the first tier whose maximum
    leverage is below it (Binance rejects a leverage, or an order, that would exceed it)."""
    for tier in tiers:
        if tier.max_leverage < leverage:
            return tier.floor_usdt
    return _INF
