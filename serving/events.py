"""What goes into the engine (market data, fills, order updates, market limits) and what comes out
(orders, cancels, decision records).

Conventions of ``pipeline/data/schemas.py``: ``ts_ns`` is exchange event time in integer ns,
prices are in quote currency (USDT), quantities in the base coin, ``side`` is +1 buy / -1 sell.
Every type is a NamedTuple: immutable, and cheap enough to build on the hot path (a frozen
dataclass costs several times more per instance).
"""

from __future__ import annotations

from typing import Any, NamedTuple

MARKET, LIMIT, STOP = "market", "limit", "stop"

# The checks the risk manager runs on every order, in order; a record lists them for an order
# that passed and names the one that failed otherwise (serving/risk/manager.py).
RISK_CHECKS = (
    "finite", "kill_switch", "reduce_only", "min_notional", "rate", "position_limit",
    "notional_limit", "leverage_cap", "portfolio_cap",
)  # fmt: skip


class Quote(NamedTuple):
    """Top of book."""

    symbol: str
    ts_ns: int
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float


class Trade(NamedTuple):
    symbol: str
    ts_ns: int
    price: float
    qty: float
    side: int  # +1 the taker bought


class Fill(NamedTuple):
    """One execution of one of our orders. ``fee_usdt`` is what we paid (negative: a rebate).
    ``fill_id`` is the venue's id of the execution (an exchange trade id; the paper broker's
    ``<client_id>:<n>``), the journal's key so that a fill seen twice is booked once: one order
    can fill twice at the same time, price and size. Empty where nobody needs it (backtests)."""

    symbol: str
    ts_ns: int
    client_id: str
    price: float
    qty: float
    side: int
    fee_usdt: float
    fill_id: str = ""


class OrderDone(NamedTuple):
    """The venue says an order no longer works: ``cancelled`` (ours confirmed, or the venue's),
    ``rejected`` (e.g. a post-only that would cross) or ``expired``. Filled orders need no event."""

    symbol: str
    ts_ns: int
    client_id: str
    reason: str


class MarketLimits(NamedTuple):
    """The exchange's rules for one symbol. ``maint_margin_rate`` is the first tier's (Binance
    BTCUSDT: 0.4 %)."""

    symbol: str
    max_leverage: float
    tick_size: float
    lot_size: float
    min_notional_usdt: float
    maint_margin_rate: float = 0.004


class Order(NamedTuple):
    """A new order. ``type`` is market, limit or stop (a stop-market: ``price`` is its trigger).
    Market orders carry ``price`` 0.0. ``tag`` names the strategy, or ``risk`` for stops and
    risk exits."""

    client_id: str
    symbol: str
    side: int
    type: str
    price: float
    qty: float
    post_only: bool
    reduce_only: bool
    tag: str

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


class Cancel(NamedTuple):
    client_id: str
    symbol: str


class DecisionRecord(NamedTuple):
    """Why the engine did what it did on one event. The venue applies ``cancels`` before
    ``orders``. ``features`` are the values of ``feature_names`` (the roles, in FeatureRoles order)
    the decision used; ``vetoes`` are orders the risk manager refused, with the reason."""

    ts_ns: int
    symbol: str
    event: str  # tick | trade | fill | order_done | funding | clock | control
    feature_names: tuple[str, ...]
    features: tuple[float, ...]
    p_up: float
    predicted_move: float
    model_ok: bool
    regime: str
    strategy: str
    leverage: float
    kill_state: str
    kill_reason: str
    cancels: tuple[Cancel, ...]
    orders: tuple[Order, ...]
    vetoes: tuple[tuple[Order, str], ...]
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for the decision log (NaN stays NaN: json writes it as NaN)."""
        return {
            "ts_ns": self.ts_ns,
            "symbol": self.symbol,
            "event": self.event,
            "features": dict(zip(self.feature_names, self.features)),
            "model": {"p_up": self.p_up, "predicted_move": self.predicted_move, "ok": self.model_ok},
            "regime": self.regime,
            "strategy": self.strategy,
            "leverage": self.leverage,
            "kill_switch": {"state": self.kill_state, "reason": self.kill_reason},
            "risk": {
                "checks": list(RISK_CHECKS),
                "passed": [o.client_id for o in self.orders],
                "failed": [{"order": o.to_dict(), "reason": why} for o, why in self.vetoes],
            },
            "cancels": [c._asdict() for c in self.cancels],
            "orders": [o.to_dict() for o in self.orders],
            "notes": list(self.notes),
        }


# ---- the simulated venue's own events (serving/venues/simulated.py): for the driver to record ----


class Depth(NamedTuple):
    """Order-book levels beyond the top, best first, each (price, qty). The touch itself comes
    from ``Quote``; a venue uses these levels to walk the book and to know queue sizes."""

    symbol: str
    ts_ns: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]


class FundingPayment(NamedTuple):
    """A funding settlement on our position. ``amount_usdt`` is what we paid (negative: received),
    as ``Fill.fee_usdt``: position notional at ``mark_px`` x ``rate``, longs pay shorts when
    ``rate`` > 0."""

    symbol: str
    ts_ns: int
    rate: float
    mark_px: float
    amount_usdt: float


class Liquidation(NamedTuple):
    """The venue closed our position: ``side`` is the closing side (-1 sold a long), at
    ``price`` (the liquidation price). ``fee_usdt`` is the clearance fee; ``margin_lost_usdt`` the
    whole isolated margin, which the account loses (the PnL to ``price``, the fee and what the
    insurance fund keeps)."""

    symbol: str
    ts_ns: int
    side: int
    qty: float
    price: float
    fee_usdt: float
    margin_lost_usdt: float
