"""Hard stops and the liquidation distance of an isolated-margin perpetual position.

Liquidation price (isolated margin, linear USDT-margined contract, one maintenance tier, fees and
funding ignored):

    long:  entry x (1 - 1/L + mmr)        short: entry x (1 + 1/L - mmr)

where L = entry notional / posted margin and mmr is the maintenance margin rate: the price at which
the margin left (margin + unrealised PnL) equals the maintenance margin (notional x mmr).
Binance's own formula adds a maintenance amount per tier and uses the mark price; this one is
the first tier's and slightly conservative for it.

The hard stop is the strategy's stop-loss distance from the entry, pulled in when needed so that
it stays at least ``buffer`` (relative) away from the liquidation price: the stop always fires
before liquidation could.
"""

from __future__ import annotations

def liquidation_price(side: int, entry: float, leverage: float, mmr: float) -> float:
    if side > 0:
        return entry * (1.0 - 1.0 / leverage + mmr)
    return entry * (1.0 + 1.0 / leverage - mmr)


def stop_price(side: int, entry: float, stop_loss_rel: float, liquidation: float, buffer_rel: float) -> float:
    """The hard stop's trigger (the caller rounds it to the tick, towards the entry)."""
    if side > 0:
        return max(entry * (1.0 - stop_loss_rel), liquidation * (1.0 + buffer_rel))
    return min(entry * (1.0 + stop_loss_rel), liquidation * (1.0 - buffer_rel))


def near_liquidation(side: int, price: float, liquidation: float, buffer_rel: float) -> bool:
    """True when the price is within the buffer of the liquidation price (or beyond it)."""
    if side > 0:
        return price <= liquidation * (1.0 + buffer_rel)
    return price >= liquidation * (1.0 - buffer_rel)
