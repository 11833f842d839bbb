"""What the daemon drives: a broker sends the engine's decisions to a venue and brings back what
the venue did, as the engine's own event types (``Fill``, ``OrderDone``, ``FundingPayment``,
``Liquidation``).

Synchronous by design: the daemon calls it from its one event loop, in event time (``ts_ns``), and
journals before and after each call (``serving/state/journal.py``). ``lookup`` and ``fills_since``
are what a restart needs (``serving/state/reconcile.py``): the venue is the truth about orders,
fills and positions, and an order is found by its client id, never sent twice.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, Sequence, Union

from pipeline.errors import AutoscalpError
from serving.events import DecisionRecord, Depth, Fill, FundingPayment, Liquidation, Order, OrderDone, Quote, Trade

# An order's life at the venue. ``pending``: sent and not yet acted on (in flight); the venue will
# act on it. The last four are final.
PENDING, WORKING = "pending", "working"
FILLED, CANCELLED, REJECTED, EXPIRED = "filled", "cancelled", "rejected", "expired"
FINAL_STATES = (FILLED, CANCELLED, REJECTED, EXPIRED)

VenueEvent = Union[Fill, OrderDone, FundingPayment, Liquidation]
MarketEvent = Union[Quote, Trade, Depth]


class BrokerError(AutoscalpError):
    """A broker that cannot go on: its store is missing, of another account, or failed to write."""


class OrderStatus(NamedTuple):
    """What the venue knows of one order. ``fills`` are all of its executions, in venue order."""

    order: Order
    state: str  # PENDING, WORKING or one of FINAL_STATES
    filled_qty: float
    reason: str  # why it ended: the OrderDone reason ("" while open or when filled)
    fills: tuple[Fill, ...]


class HeldPosition(NamedTuple):
    """A net position at the venue (one-way mode): signed base quantity and entry price."""

    qty: float
    entry_px: float


class Broker(Protocol):
    def submit(self, record: DecisionRecord, ts_ns: int) -> Sequence[VenueEvent]:
        """Send the record's cancels, then its orders (one message), decided at ``ts_ns``. Returns
        the venue events that happened at once."""

    def poll(self, ts_ns: int) -> Sequence[VenueEvent]:
        """Fills, order updates and funding that happened up to ``ts_ns`` since the last call."""

    def on_market(self, event: MarketEvent) -> Sequence[VenueEvent]:
        """A market event the daemon received. Paper: moves the simulated venue (it may fill our
        orders). Live: nothing to do (the exchange has its own market)."""

    def lookup(self, client_id: str) -> OrderStatus | None:
        """The venue's view of an order, or None when the venue never received it."""

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders the venue holds or will act on (working, or pending: in flight), oldest first."""

    def positions(self) -> dict[str, HeldPosition]:
        """Non-flat positions by symbol."""

    def fills_since(self, ts_ns: int) -> list[Fill]:
        """Every fill at or after ``ts_ns``, in venue order, liquidations' included (``fill_id``
        set): what a restart books when the journal lacks it."""

    def wallet_usdt(self) -> float:
        """The futures wallet (deposits + realised PnL - fees - funding): a restarted engine's equity
        before unrealised PnL."""

    def close(self) -> None:
        """Flush and release the connection or store."""
