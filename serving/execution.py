"""From decisions to orders: sizing, prices on the grid, stops, exits and cancels, each order through
the risk manager's veto, collected into the current event's outputs.

The engine (serving/engine.py) decides what should happen; this module knows how a decision becomes
orders: how big (``capacity``), at what price (the tick grid, post-only never through the book),
how a quote is kept or replaced, where a stop goes. ``SymbolState`` is the engine's state of one
symbol, shared by both.
"""

from __future__ import annotations

import math

from serving.events import LIMIT, MARKET, STOP, Cancel, Order
from serving.features import TickView
from serving.markets import Market
from serving.orders import ASK_QUOTE, BID_QUOTE, ENTRY, EXIT, STOP as STOP_ROLE, WorkingOrder, WorkingOrders
from serving.portfolio import Portfolio, Position
from serving.regime import RegimeDetector
from serving.risk.manager import RiskManager
from serving.risk.stops import liquidation_price, stop_price
from serving.risk.trailing import TrailingStop

_NAN = float("nan")
_INF = float("inf")


class SymbolState:
    __slots__ = ("symbol", "market", "position", "orders", "regime", "owner", "trail", "stop_px", "liq_px",
                 "bid", "ask", "bid_qty", "ask_qty", "mid", "last_ts", "model_bad", "target_leverage",
                 "leverage", "cap", "position_limit")  # fmt: skip

    def __init__(self, market: Market, position: Position, regime: RegimeDetector, cap: float, limit: float):
        self.symbol, self.market, self.position, self.regime = market.symbol, market, position, regime
        self.orders = WorkingOrders()
        self.owner = None  # the strategy that holds the symbol
        self.trail: TrailingStop | None = None
        self.stop_px = self.liq_px = _NAN
        self.bid = self.ask = self.bid_qty = self.ask_qty = self.mid = _NAN
        self.last_ts = -1
        self.model_bad = False
        self.target_leverage = _NAN  # the leverage mode's value before emergency cuts and caps
        self.leverage = 0.0  # in force: never above ``cap``
        self.cap, self.position_limit = cap, limit

    def worst_qty(self) -> float:
        """|position| if every exposure-adding working order on the worse side filled."""
        qty, orders = self.position.qty, self.orders
        long, short = qty + orders.buy_open, orders.sell_open - qty
        return long if long > short else short


class Execution:
    """Order placement for the engine, and the outputs of the event being processed."""

    __slots__ = ("risk", "portfolio", "states", "orders", "cancels", "vetoes", "notes", "now", "_seq", "_prefix",
                 "_rate_wait", "_max_notional", "_portfolio_cap", "_liq_buffer", "_default_stop", "_multi")  # fmt: skip

    def __init__(self, risk: RiskManager, portfolio: Portfolio, states: tuple[SymbolState, ...],
                 client_id_prefix: str, max_notional_usdt: float, portfolio_cap: float, liq_buffer_rel: float,
                 default_stop_rel: float) -> None:  # fmt: skip
        self.risk, self.portfolio, self.states = risk, portfolio, states
        self.orders: list[Order] = []  # this event's outputs
        self.cancels: list[Cancel] = []
        self.vetoes: list[tuple[Order, str]] = []
        self.notes: list[str] = []
        self.now = -1  # event time, set by the engine
        self._seq = 0
        self._rate_wait = False  # new exposure waits for the rate window (noted once per wait)
        self._prefix = client_id_prefix + "-"
        self._max_notional, self._portfolio_cap = max_notional_usdt, portfolio_cap
        self._liq_buffer, self._default_stop = liq_buffer_rel, default_stop_rel
        self._multi = len(states) > 1  # the other symbols' exposure matters only then

    def capacity(self, st: SymbolState) -> float:
        """The notional this symbol may carry now: leverage x equity, within the notional and
        position limits and the portfolio room the other symbols leave."""
        portfolio = self.portfolio
        equity = portfolio.cash_usdt + portfolio.unrealised_usdt  # (Portfolio.equity_usdt, without the call)
        cap = st.leverage * equity
        if self._max_notional < cap:
            cap = self._max_notional
        limit = st.position_limit * st.mid
        if limit < cap:
            cap = limit
        room = self._portfolio_cap * equity
        if self._multi:
            room -= self.other_notional(st)
        if room < cap:
            cap = room
        return cap if cap > 0.0 else 0.0

    def other_notional(self, st: SymbolState) -> float:
        """The other symbols' worst-case notional."""
        total = 0.0
        for other in self.states:
            if other is not st and other.mid == other.mid:
                total += other.worst_qty() * other.mid
        return total

    def enter(self, st: SymbolState, view: TickView, strategy, side: int) -> None:
        market = st.market
        qty = market.floor_qty(strategy.order_fraction * self.capacity(st) / view.mid)
        if qty * view.mid < market.min_notional or qty <= 0.0 or self.rate_waits():
            return
        if strategy.entry_type == MARKET:
            order = Order(self._client_id(), st.symbol, side, MARKET, 0.0, qty, False, False, strategy.name)
        else:  # join the touch, post-only: pay no spread, earn the maker fee
            price = view.bid if side > 0 else view.ask
            order = Order(self._client_id(), st.symbol, side, LIMIT, price, qty, True, False, strategy.name)
        self.submit(st, order, ENTRY, strategy)

    def quote(self, st: SymbolState, view: TickView, mm, reduce_only: bool, capacity: float = -1.0) -> None:
        """Keep the market maker's two quotes where it wants them; replace only what moved enough.
        ``capacity``: this tick's ``capacity(st)`` if the caller has it, else -1 (computed only when
        needed: inventory to skew, or a quote to size)."""
        orders, mid = st.orders, view.mid
        qty = st.position.qty
        ratio = 0.0
        if qty != 0.0:
            if capacity < 0.0:
                capacity = self.capacity(st)
            limit = mm.max_inventory_fraction * capacity / mid
            ratio = qty / limit if limit > 0.0 else math.copysign(_INF, qty)
        bid, ask, half = mm.quotes(view, ratio)
        if reduce_only:  # only the side that unwinds the inventory
            if qty >= 0.0:
                bid = 0.0
            if qty <= 0.0:
                ask = 0.0
        keep_within, replace_beyond = mm.passive_requote * half * mid, mm.adverse_requote * half * mid
        market, tick = st.market, st.market.tick
        # The two sides written out (this runs on every tick a market maker holds the symbol): each
        # target goes on the grid, post-only (never at or through the other side); a resting quote
        # within the band is kept, anything else goes through _requote.
        if bid > 0.0:
            bid = market.floor_price(bid if bid < view.ask - tick else view.ask - tick)
        working = orders.bid
        if working is None:
            if bid > 0.0:
                capacity = self._requote(st, mm, 1, bid, None, capacity, reduce_only)
        elif not (bid > 0.0 and working.order.reduce_only == reduce_only
                  and -keep_within < working.order.price - bid < replace_beyond):  # fmt: skip
            capacity = self._requote(st, mm, 1, bid, working, capacity, reduce_only)
        if ask > 0.0:
            ask = market.ceil_price(ask if ask > view.bid + tick else view.bid + tick)
        working = orders.ask
        if working is None:
            if ask > 0.0:
                self._requote(st, mm, -1, ask, None, capacity, reduce_only)
        elif not (ask > 0.0 and working.order.reduce_only == reduce_only
                  and -keep_within < ask - working.order.price < replace_beyond):  # fmt: skip
            self._requote(st, mm, -1, ask, working, capacity, reduce_only)

    def _requote(self, st: SymbolState, mm, side: int, price: float, working: WorkingOrder | None,
                 capacity: float, reduce_only: bool) -> float:  # fmt: skip
        """Cancel the side's resting quote if any, quote ``price`` if positive; returns the capacity
        (computed at most once per tick: placing the bid does not change it for the ask)."""
        if working is not None:
            self.cancel(st, working)
        if price > 0.0:
            if capacity < 0.0:
                capacity = self.capacity(st)
            self._place_quote(st, mm, side, price, capacity, reduce_only)
        return capacity

    def _place_quote(self, st: SymbolState, mm, side: int, price: float, capacity: float, reduce_only: bool) -> None:
        market, qty = st.market, st.position.qty
        size = mm.quote_fraction * capacity / st.mid
        if reduce_only:
            size = min(size, abs(qty))
        else:  # never beyond the inventory limit if it fills
            size = min(size, mm.max_inventory_fraction * capacity / st.mid - side * qty)
        size = market.floor_qty(size)
        if size <= 0.0 or (size * price < market.min_notional and not reduce_only):
            return
        if not reduce_only and self.rate_waits():
            return
        order = Order(self._client_id(), st.symbol, side, LIMIT, price, size, True, reduce_only, mm.name)
        self.submit(st, order, BID_QUOTE if side > 0 else ASK_QUOTE, mm)

    def exit(self, st: SymbolState, qty: float, tag: str, why: str) -> None:
        """A reduce-only market order against the position, with the reason in the record."""
        side = -1 if st.position.qty > 0.0 else 1
        order = Order(self._client_id(), st.symbol, side, MARKET, 0.0, qty, False, True, tag)
        self.notes.append(why)
        self.submit(st, order, EXIT, st.owner)

    def protect(self, st: SymbolState) -> None:
        """Every position has a stop: (re)place it for the whole position after every fill."""
        position, market, orders = st.position, st.market, st.orders
        side = 1 if position.qty > 0.0 else -1
        st.liq_px = liquidation_price(side, position.entry, position.leverage, market.mmr)
        stop_loss = st.owner.stop_loss_rel if st.owner is not None else self._default_stop
        raw = stop_price(side, position.entry, stop_loss, st.liq_px, self._liq_buffer)
        st.stop_px = price = market.ceil_price(raw) if side > 0 else market.floor_price(raw)
        qty = abs(position.qty)
        stop = orders.stop
        if stop is not None:
            if stop.remaining == qty and stop.order.price == price and stop.order.side == -side:
                return
            self.cancel(st, stop)
        exit_price = st.bid if side > 0 else st.ask
        if side * (exit_price - price) <= 0.0:  # already through it: a stop would trigger at once
            if orders.exit is None:
                self.exit(st, qty, "risk", "stop already crossed at placement: exiting")
            return
        order = Order(self._client_id(), st.symbol, -side, STOP, price, qty, False, True, "risk")
        self.submit(st, order, STOP_ROLE, st.owner)

    def cancel(self, st: SymbolState, working: WorkingOrder) -> None:
        self.cancels.append(st.orders.cancel(working, self.now))

    def pull(self, st: SymbolState, *working: WorkingOrder | None) -> None:
        """Cancel whichever of these orders exist."""
        for w in working:
            if w is not None:
                self.cancels.append(st.orders.cancel(w, self.now))

    def submit(self, st: SymbolState, order: Order, role: str, strategy) -> None:
        """The risk manager's veto, then the order goes out (or into the record's vetoes)."""
        orders = st.orders
        other = self.other_notional(st) if not order.reduce_only and self._multi else 0.0
        why = self.risk.check(
            order, st.position.qty, orders.buy_open, orders.sell_open, st.mid, st.position_limit,
            st.market.min_notional, st.leverage, self.portfolio.equity_usdt, other, self.now,
        )  # fmt: skip
        if why:
            self.vetoes.append((order, why))
            return
        self.risk.sent(order, self.now)
        orders.add(WorkingOrder(order, role, strategy, st.leverage, self.now))
        self.orders.append(order)

    def rate_waits(self) -> bool:
        """The order rate's window is full: an exposure-adding order would be refused, so none is
        built (a market maker would try again every tick, each refusal a record). The first
        tick of a wait says so in a note; the wait ends when the window has room."""
        if not self.risk.rate_full(self.now):
            self._rate_wait = False
            return False
        if not self._rate_wait:
            self._rate_wait = True
            self.notes.append(f"rate: {self.risk.max_rate} orders in the last second; new exposure waits")
        return True

    def _client_id(self) -> str:
        # Deterministic: the same events give the same ids. The prefix must differ per run (config).
        self._seq += 1
        return f"{self._prefix}{self._seq}"
