"""Our working orders on one symbol, and the exposure they could add if they all filled.

An order works from the moment the engine emits it until it is filled, or the venue reports it
done (``OrderDone``). A cancel we sent keeps counting towards exposure until the venue confirms it
(or ``cancel_timeout_ms`` passes without word), because it can still fill in flight: the position
limit then holds even when a cancel races a fill.
"""

from __future__ import annotations

from serving.events import Cancel, Order

# An order's role is also the WorkingOrders slot that holds it.
ENTRY, BID_QUOTE, ASK_QUOTE, EXIT, STOP = "entry", "bid", "ask", "exit", "stop"


class WorkingOrder:
    __slots__ = ("order", "remaining", "role", "strategy", "leverage", "placed_ns", "cancel_ns")

    def __init__(self, order: Order, role: str, strategy, leverage: float, placed_ns: int) -> None:
        self.order, self.remaining, self.role = order, order.qty, role
        self.strategy, self.leverage, self.placed_ns = strategy, leverage, placed_ns
        self.cancel_ns = -1  # when we asked to cancel it, -1 while it works


class WorkingOrders:
    """One symbol's orders. The role slots (entry, bid, ask, exit, stop) hold live orders only; a
    cancelled order leaves its slot at once but stays in ``by_id`` until confirmed."""

    __slots__ = ("by_id", "entry", "bid", "ask", "exit", "stop", "buy_open", "sell_open", "cancelling",
                 "_oldest_cancel_ns")  # fmt: skip

    def __init__(self) -> None:
        self.by_id: dict[str, WorkingOrder] = {}
        self.entry = self.bid = self.ask = self.exit = self.stop = None
        self.buy_open = self.sell_open = 0.0  # qty of exposure-adding orders that could still fill
        self.cancelling = 0
        self._oldest_cancel_ns = -1

    def add(self, working: WorkingOrder) -> None:
        order = working.order
        self.by_id[order.client_id] = working
        setattr(self, working.role, working)
        if not order.reduce_only:
            if order.side > 0:
                self.buy_open += order.qty
            else:
                self.sell_open += order.qty

    def cancel(self, working: WorkingOrder, now_ns: int) -> Cancel:
        self._vacate(working)
        if working.cancel_ns < 0:
            working.cancel_ns = now_ns
            if not self.cancelling:
                self._oldest_cancel_ns = now_ns
            self.cancelling += 1
        return Cancel(working.order.client_id, working.order.symbol)

    def filled(self, client_id: str, qty: float) -> WorkingOrder | None:
        """Count a fill against its order; the order (None if unknown) is dropped when complete."""
        working = self.by_id.get(client_id)
        if working is None:
            return None
        qty = min(qty, working.remaining)
        working.remaining -= qty
        self._count(working, -qty)
        if working.remaining <= working.order.qty * 1e-9:
            self.remove(working)
        return working

    def remove(self, working: WorkingOrder) -> None:
        if self.by_id.pop(working.order.client_id, None) is None:
            return
        self._vacate(working)
        self._count(working, -working.remaining)
        working.remaining = 0.0
        if working.cancel_ns >= 0:
            self.cancelling -= 1

    def expire_cancels(self, now_ns: int, timeout_ns: int) -> None:
        """Stop counting cancels the venue never confirmed (cheap when none is overdue)."""
        deadline = now_ns - timeout_ns
        if not self.cancelling or self._oldest_cancel_ns > deadline:
            return
        for working in [w for w in self.by_id.values() if 0 <= w.cancel_ns <= deadline]:
            self.remove(working)
        pending = [w.cancel_ns for w in self.by_id.values() if w.cancel_ns >= 0]
        self._oldest_cancel_ns = min(pending) if pending else -1

    def live(self):
        """The orders that still work (not being cancelled), oldest first."""
        return [w for w in self.by_id.values() if w.cancel_ns < 0]

    def _vacate(self, working: WorkingOrder) -> None:
        if getattr(self, working.role) is working:
            setattr(self, working.role, None)

    def _count(self, working: WorkingOrder, qty: float) -> None:
        if working.order.reduce_only:
            return
        if working.order.side > 0:
            self.buy_open = max(0.0, self.buy_open + qty)
        else:
            self.sell_open = max(0.0, self.sell_open + qty)
