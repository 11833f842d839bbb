"""A simulated Binance USD-M perpetual-futures venue, for backtests and paper trading.

It holds the account's truth: wallet, isolated positions, fees, funding, liquidations. The engine
keeps its own estimate; a driver passes events between the two in exchange-time order::

    venue = SimulatedVenue(VenueConfig(), markets, balance_usdt=10_000)
    for event in feed:                                 # quotes, trades, depth: exchange time
        while venue.next_ts <= event.ts_ns:            # orders arriving, funding due, before it
            deliver(venue.advance(venue.next_ts))
        deliver(venue.on_quote(event))                 # or on_trade / on_depth
        send(engine.on_tick(event, ...), event.ts_ns)

    def deliver(events):                               # in time order, each with its ts_ns
        for e in events:
            if type(e) is Fill:                        # a Liquidation comes with its Fill
                send(engine.on_fill(e), e.ts_ns)
            elif type(e) is OrderDone:
                send(engine.on_order_done(e), e.ts_ns)
            else:                                      # FundingPayment, Liquidation: record them
                ...

    def send(record, ts_ns):
        deliver(venue.submit(record, ts_ns))           # None or nothing to send: no events

Every call returns the events it caused, in time order (an empty tuple when none). ``on_quote``
and friends first ``advance`` to their own time, so a driver without the ``next_ts`` loop still
works, only with the engine's reactions to an arrival processed a little late.

Time: an order or cancel sent at t reaches the venue at t + market-data delay + order latency
(``LatencyConfig``; messages arrive in the order sent, as on one connection) and is matched
against the book as it is then; until then its cancel can lose the race with a fill. Orders
arriving at the same ns as a quote are matched before it. The engine's record is one message:
its cancels apply first, then its orders, and ``record.leverage`` sets the symbol's leverage.

Rules, as Binance's: a post-only order that would cross is rejected; a reduce-only order with no
position to reduce is rejected, and one bigger than the position is cut to it when it fills (what
is left expires); a stop that would trigger at once is rejected; a stop triggers when the last
trade, or the quote it would hit, reaches its price, and then walks the book as a market order;
cancelling an order the venue no longer has (filled) is answered by nothing. Matching and slippage:
``serving/venues/matching.py``.

Margin: isolated, per position. An order that adds exposure is accepted only if the position's
notional stays within what the leverage allows (the bracket table) and the added margin
(notional / leverage) fits in the available balance (wallet less posted margins; margin for resting
orders is not reserved). Leverage applies to increases from then on; the posted margin stays.
Fees come out of the wallet, funding out of the position's margin (so it moves the liquidation
price). The liquidation price is Binance's (``serving/venues/margin.py``); the mark is the mid of
every quote (stricter than Binance's smoothed mark price) and any mark given by ``on_mark`` or
``on_funding``. A liquidated position is closed at its liquidation price and loses its whole
margin: the PnL to that price, the clearance fee and what the insurance fund keeps, as on the
exchange, whatever the path; the price lies between the last mark on the safe side and the one
that crossed it, so the market did pass through it. The driver gets a ``Liquidation`` and a
``Fill`` (client id ``liquidation-<n>``, fee = the margin left) so that the engine books the same
loss, then ``OrderDone`` for the symbol's cancelled orders.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Mapping, NamedTuple, Sequence

from pipeline.errors import AutoscalpError
from serving.events import (
    LIMIT, MARKET, STOP, Depth, DecisionRecord, Fill, FundingPayment, Liquidation, MarketLimits, Order, OrderDone,
    Quote, Trade,
)  # fmt: skip
from serving.markets import Market
from serving.portfolio import Portfolio, Position
from serving.venues.config import VenueConfig
from serving.venues.latency import samplers
from serving.venues.margin import liquidation_price, max_notional
from serving.venues.matching import Resting, depth_at, queue_on_arrival, walk

_NOTHING: tuple = ()
_INF = float("inf")
_NS_PER_HOUR = 3_600 * 1_000_000_000


class UnknownVenueSymbolError(AutoscalpError):
    """Market data for a symbol the venue was not given market limits for."""


class VenuePosition(NamedTuple):
    symbol: str
    qty: float  # signed, base coin
    entry_px: float
    margin_usdt: float  # isolated margin posted (less funding paid)
    leverage: float  # in force for new increases
    liquidation_px: float  # 0.0: none (flat, or a long that cannot be liquidated)


class AccountSummary(NamedTuple):
    wallet_usdt: float  # deposits + realised PnL - fees - funding - liquidation losses beyond PnL
    equity_usdt: float  # wallet + unrealised PnL at the last mids
    realised_usdt: float  # PnL of closed quantity, liquidations included
    maker_fees_usdt: float  # negative: rebates
    taker_fees_usdt: float
    funding_usdt: float  # paid (negative: received)
    liquidations: int
    liquidation_fees_usdt: float  # clearance fees
    margin_lost_usdt: float  # isolated margin lost to liquidations
    fills: int
    volume_usdt: float


class _Book:
    """The venue's view of one symbol: last quote and depth, our working orders, our position."""

    __slots__ = ("symbol", "market", "tiers", "quote", "depth", "buys", "sells", "stops", "busy", "position",
                 "leverage", "max_notional", "liq_px", "taken_for", "taken_bid", "taken_ask")  # fmt: skip

    def __init__(self, market: Market, tiers, position: Position, leverage: float) -> None:
        self.symbol, self.market, self.tiers, self.position = market.symbol, market, tiers, position
        self.quote: Quote | None = None
        self.depth: Depth | None = None
        self.buys: list[Resting] = []  # resting limits, in arrival (queue) order
        self.sells: list[Resting] = []
        self.stops: list[Resting] = []
        self.busy = False  # any working order or a position: market data must be matched
        self.leverage = min(leverage, tiers[0].max_leverage)
        self.max_notional = max_notional(tiers, self.leverage)
        self.liq_px = 0.0
        self.taken_for: Quote | None = None  # the quote the taken volumes below are counted against
        self.taken_bid = self.taken_ask = 0.0

    def refresh(self) -> None:
        self.busy = bool(self.buys or self.sells or self.stops) or self.position.qty != 0.0

    def mid(self) -> float:
        quote = self.quote
        return 0.5 * (quote.bid + quote.ask) if quote is not None else 0.0


class SimulatedVenue:
    """Market data in (``on_quote``, ``on_trade``, ``on_depth``, ``on_mark``, ``on_funding``), the
    engine's decisions in (``submit``), time moved on (``advance`` up to ``next_ts``); each returns the
    ``Fill``, ``OrderDone``, ``FundingPayment`` and ``Liquidation`` events it caused. The account:
    ``wallet_usdt``, ``available_usdt``, ``position(symbol)``, ``equity(marks)``, ``account()``."""

    def __init__(self, config: VenueConfig, markets: Iterable[MarketLimits], balance_usdt: float) -> None:
        """``balance_usdt``: the wallet at the start (USDT deposited in the futures account)."""
        self.config = config
        markets = [Market(m) for m in markets]
        if not markets:
            raise AutoscalpError("the venue needs market limits for at least one symbol")
        self.portfolio = Portfolio([m.symbol for m in markets], balance_usdt, 1)
        margin = config.margin
        self._books = {
            m.symbol: _Book(m, margin.tiers_by_symbol.get(m.symbol, margin.tiers), self.portfolio.positions[m.symbol],
                            margin.default_leverage)
            for m in markets
        }  # fmt: skip
        self._maker, self._taker = config.fees.maker_rate, config.fees.taker_rate
        self._md_delay, self._order_delay = samplers(config.latency.market_data, config.latency.order,
                                                     config.latency.seed)  # fmt: skip
        impact = config.impact
        self._spacing_ticks, self._level_fraction = impact.level_spacing_ticks, impact.level_size_fraction
        self._max_slip = impact.max_slippage_bps * 1e-4
        self._behind_touch = config.queue.behind_touch_fraction
        self._liq_fee_rate = margin.liquidation_fee_rate
        funding = config.funding
        self._funding_interval_ns = funding.interval_h * _NS_PER_HOUR
        self._funding_rate = funding.rate
        self._next_funding = -1 if funding.source == "schedule" else _INF  # -1: set by the first event
        self._working: dict[str, tuple[_Book, Resting]] = {}
        self._inbox: deque = deque()  # (arrival ns, symbol, leverage, cancels, orders), arrival order
        self._last_arrival = -1
        # The time of the next thing the venue does on its own (an arrival, a funding settlement):
        # market data at or after it takes the slow path. -1 until the first event.
        self.next_ts = -1 if funding.source == "schedule" else _INF
        self.now = -1
        self._liquidations = 0
        self._fills = 0
        self._volume = self._maker_fees = self._taker_fees = self._funding = 0.0
        self._liq_fees = self._margin_lost = 0.0

    # ---- market data --------------------------------------------------------------------------

    def on_quote(self, quote: Quote) -> Sequence:
        if quote.ts_ns >= self.next_ts:
            return self._then(self.advance(quote.ts_ns), self.on_quote(quote))
        try:
            book = self._books[quote.symbol]
        except KeyError:
            raise self._unknown(quote.symbol) from None
        book.quote = quote
        if book.busy:
            return self._match_quote(book, quote)
        return _NOTHING

    def on_trade(self, trade: Trade) -> Sequence:
        if trade.ts_ns >= self.next_ts:
            return self._then(self.advance(trade.ts_ns), self.on_trade(trade))
        try:
            book = self._books[trade.symbol]
        except KeyError:
            raise self._unknown(trade.symbol) from None
        if book.buys or book.sells or book.stops:
            return self._match_trade(book, trade)
        return _NOTHING

    def on_depth(self, depth: Depth) -> Sequence:
        """Levels beyond the touch (the touch itself moves with ``on_quote``)."""
        out = list(self.advance(depth.ts_ns))
        book = self._book(depth.symbol)
        book.depth = depth
        for resting, levels, side in ((book.buys, depth.bids, 1), (book.sells, depth.asks, -1)):
            for r in resting:
                shown = depth_at(levels, side, r.price)
                if shown < r.queue_ahead:  # NaN (unknown) compares False
                    r.queue_ahead = shown
        return out or _NOTHING

    def on_mark(self, symbol: str, ts_ns: int, mark_px: float) -> Sequence:
        """A mark price from the data (Binance's markPrice stream): liquidations are checked on it."""
        out = list(self.advance(ts_ns))
        book = self._book(symbol)
        self._check_liquidation(book, mark_px, max(ts_ns, self.now), out)
        return out or _NOTHING

    def on_funding(self, symbol: str, ts_ns: int, rate: float, mark_px: float) -> Sequence:
        """A funding settlement from the data (``FundingConfig.source == "data"``)."""
        out = list(self.advance(ts_ns))
        book = self._book(symbol)
        self._pay_funding(book, max(ts_ns, self.now), rate, mark_px, out)
        return out or _NOTHING

    # ---- orders -------------------------------------------------------------------------------

    def submit(self, record: DecisionRecord | None, ts_ns: int) -> Sequence:
        """Send a decision's cancels and orders, decided at ``ts_ns``; with no latency they act now."""
        if record is None or not (record.cancels or record.orders):
            return _NOTHING
        arrival = ts_ns + self._md_delay() + self._order_delay()
        if arrival < self._last_arrival:
            arrival = self._last_arrival
        self._last_arrival = arrival
        leverage = record.leverage if 0.0 < record.leverage < _INF else 0.0  # NaN: none
        self._inbox.append((arrival, record.symbol, leverage, record.cancels, record.orders))
        if arrival < self.next_ts:
            self.next_ts = arrival
        return self.advance(ts_ns) if arrival <= ts_ns else _NOTHING

    def advance(self, ts_ns: int) -> Sequence:
        """Do what falls due up to ``ts_ns``: arrivals of orders and cancels, funding settlements."""
        if ts_ns < self.next_ts:
            return _NOTHING
        if self._next_funding < 0:
            self._next_funding = (ts_ns // self._funding_interval_ns + 1) * self._funding_interval_ns
            self._reschedule()
        out: list = []
        inbox = self._inbox
        while self.next_ts <= ts_ns:
            due = self.next_ts
            self.now = max(self.now, due)
            if inbox and inbox[0][0] == due:
                self._arrive(inbox.popleft(), out)
            else:
                self._settle_funding(due, out)
                self._next_funding += self._funding_interval_ns
            self._reschedule()
        if ts_ns > self.now:
            self.now = ts_ns
        return out

    def set_leverage(self, symbol: str, leverage: float) -> float:
        """As Binance's change-leverage call: at least 1x, at most the first tier's maximum, and
        refused (the old one stays) when the position's notional exceeds what it allows. Returns the
        leverage in force. Binance takes whole numbers; the engine's value is kept, so that both
        sides post the same margin."""
        book = self._book(symbol)
        leverage = min(max(leverage, 1.0), book.tiers[0].max_leverage)
        if leverage != book.leverage:
            allowed = max_notional(book.tiers, leverage)
            if abs(book.position.qty) * book.mid() <= allowed:
                book.leverage, book.max_notional = leverage, allowed
        return book.leverage

    # ---- the account --------------------------------------------------------------------------

    @property
    def wallet_usdt(self) -> float:
        return self.portfolio.cash_usdt

    @property
    def available_usdt(self) -> float:
        """Wallet less the isolated margin posted."""
        return self.portfolio.cash_usdt - sum(b.position.margin_usdt for b in self._books.values())

    def position(self, symbol: str) -> VenuePosition:
        book = self._book(symbol)
        p = book.position
        return VenuePosition(symbol, p.qty, p.entry, p.margin_usdt, book.leverage, book.liq_px)

    def equity(self, marks: Mapping[str, float] | None = None) -> float:
        """Wallet + unrealised PnL at ``marks`` (by symbol; the last mid for those not given)."""
        total = self.portfolio.cash_usdt
        for symbol, book in self._books.items():
            p = book.position
            if p.qty != 0.0:
                mark = marks.get(symbol) if marks is not None else None
                total += p.qty * ((mark if mark is not None else book.mid()) - p.entry)
        return total

    def account(self) -> AccountSummary:
        return AccountSummary(
            self.portfolio.cash_usdt, self.equity(), sum(b.position.realised_usdt for b in self._books.values()),
            self._maker_fees, self._taker_fees, self._funding, self._liquidations, self._liq_fees,
            self._margin_lost, self._fills, self._volume,
        )  # fmt: skip

    def working(self, symbol: str | None = None) -> list[Order]:
        """Our orders working at the venue (arrived, not done), oldest first."""
        return [r.order for book, r in self._working.values() if symbol is None or book.symbol == symbol]

    # ---- arrivals -----------------------------------------------------------------------------

    def _arrive(self, message: tuple, out: list) -> None:
        arrival, symbol, leverage, cancels, orders = message
        if leverage > 0.0 and symbol in self._books:
            self.set_leverage(symbol, leverage)
        for cancel in cancels:
            found = self._working.get(cancel.client_id)
            if found is not None:
                self._done(found[0], found[1], arrival, "cancelled", out)
        for order in orders:
            self._accept(order, arrival, out)

    def _accept(self, order: Order, now: int, out: list) -> None:
        book = self._books.get(order.symbol)
        quote = book.quote if book is not None else None
        side, kind = order.side, order.type
        if (quote is None or not 0.0 < quote.bid < quote.ask or order.client_id in self._working
                or side not in (1, -1) or not 0.0 < order.qty < _INF
                or (kind != MARKET and not 0.0 < order.price < _INF) or kind not in (MARKET, LIMIT, STOP)):  # fmt: skip
            out.append(OrderDone(order.symbol, now, order.client_id, "rejected"))
            return
        held = book.position.qty
        if order.reduce_only:
            refused = held == 0.0 or (held > 0.0) == (side > 0)
        else:
            refused = not self._margin_allows(book, order, quote)
        touch = quote.ask if side > 0 else quote.bid
        if kind == STOP:  # a stop that would trigger at once is refused
            refused = refused or side * (touch - order.price) >= 0.0
        elif kind == LIMIT and order.post_only:
            refused = refused or side * (order.price - touch) >= 0.0
        if refused:
            out.append(OrderDone(order.symbol, now, order.client_id, "rejected"))
            return
        if kind == STOP:
            self._rest(book, book.stops, Resting(order, order.qty, 0.0))
        elif kind == MARKET:
            left = self._take(book, order, order.qty, _INF * side, now, out)
            if left > 0.0:
                out.append(OrderDone(order.symbol, now, order.client_id, "expired"))
        else:
            left = order.qty
            if side * (order.price - touch) >= 0.0:  # marketable: takes up to its price, rests the rest
                left = self._take(book, order, left, order.price, now, out)
                queue = 0.0
            else:
                queue = queue_on_arrival(side, order.price, quote.bid if side > 0 else quote.ask,
                                         quote.bid_qty if side > 0 else quote.ask_qty, book.depth,
                                         self._behind_touch)  # fmt: skip
            if left > 0.0 and not (order.reduce_only and book.position.qty == 0.0):
                self._rest(book, book.buys if side > 0 else book.sells, Resting(order, left, queue))
            elif left > 0.0:
                out.append(OrderDone(order.symbol, now, order.client_id, "expired"))
        if book.position.qty != 0.0:
            self._check_liquidation(book, book.mid(), now, out)

    def _margin_allows(self, book: _Book, order: Order, quote: Quote) -> bool:
        held, side = book.position.qty, order.side
        price = order.price if order.type != MARKET else (quote.ask if side > 0 else quote.bid)
        if held == 0.0 or (held > 0.0) == (side > 0):
            added, size = order.qty, abs(held) + order.qty
        else:  # reduces first; only a flip adds
            added = size = order.qty - abs(held)
        if added <= 0.0:
            return True
        return size * price <= book.max_notional and added * price / book.leverage <= self.available_usdt

    def _rest(self, book: _Book, queue: list[Resting], resting: Resting) -> None:
        queue.append(resting)
        self._working[resting.order.client_id] = (book, resting)
        book.busy = True

    def _done(self, book: _Book, resting: Resting, now: int, reason: str, out: list) -> None:
        """The order stops working: cancelled, expired (or filled, with no event)."""
        self._working.pop(resting.order.client_id, None)
        resting.remaining = 0.0
        order = resting.order
        queue = book.stops if order.type == STOP else (book.buys if order.side > 0 else book.sells)
        queue.remove(resting)
        book.refresh()
        if reason:
            out.append(OrderDone(book.symbol, now, order.client_id, reason))

    # ---- matching -----------------------------------------------------------------------------

    def _match_quote(self, book: _Book, quote: Quote) -> Sequence:
        bid, ask = quote.bid, quote.ask
        if not 0.0 < bid < ask:
            return _NOTHING
        now = quote.ts_ns
        out: list = []
        if book.buys:
            for r in book.buys[:]:
                if r.remaining <= 0.0:  # done meanwhile (a liquidation cancels everything)
                    continue
                if ask <= r.price:  # the sellers reached our price: everyone at it was filled
                    self._fill_resting(book, r, r.remaining, now, out)
                elif bid == r.price:
                    if quote.bid_qty < r.queue_ahead:
                        r.queue_ahead = quote.bid_qty
                elif bid < r.price:
                    r.queue_ahead = 0.0
        if book.sells:
            for r in book.sells[:]:
                if r.remaining <= 0.0:
                    continue
                if bid >= r.price:
                    self._fill_resting(book, r, r.remaining, now, out)
                elif ask == r.price:
                    if quote.ask_qty < r.queue_ahead:
                        r.queue_ahead = quote.ask_qty
                elif ask > r.price:
                    r.queue_ahead = 0.0
        if book.stops:
            for r in book.stops[:]:
                if r.remaining > 0.0 and r.side * ((ask if r.side > 0 else bid) - r.price) >= 0.0:
                    self._trigger(book, r, now, out)
        qty = book.position.qty
        if qty != 0.0:  # the mark: this mid (a short's liquidation price is always > 0)
            mark = 0.5 * (bid + ask)
            if mark <= book.liq_px if qty > 0.0 else mark >= book.liq_px:
                self._liquidate(book, now, out)
        return out or _NOTHING

    def _match_trade(self, book: _Book, trade: Trade) -> Sequence:
        price, volume, aggressor, now = trade.price, trade.qty, trade.side, trade.ts_ns
        out: list = []
        for resting, passive in ((book.buys, 1), (book.sells, -1)):
            left = volume
            for r in resting[:]:
                if r.remaining <= 0.0:
                    continue
                through = passive * (r.price - price)
                if through > 0.0:  # traded beyond our price: all at it is gone
                    self._fill_resting(book, r, r.remaining, now, out)
                elif through == 0.0 and aggressor != passive and left > 0.0:
                    past_queue = left - r.queue_ahead
                    r.queue_ahead = r.queue_ahead - left if r.queue_ahead > left else 0.0
                    if past_queue > 0.0:
                        filled = self._fill_resting(book, r, min(past_queue, r.remaining), now, out)
                        left -= filled
        for r in book.stops[:]:
            if r.remaining > 0.0 and r.side * (price - r.price) >= 0.0:
                self._trigger(book, r, now, out)
        if book.position.qty != 0.0 and out:
            self._check_liquidation(book, book.mid(), now, out)
        return out or _NOTHING

    def _fill_resting(self, book: _Book, resting: Resting, qty: float, now: int, out: list) -> float:
        """A maker fill of a resting limit; returns the quantity filled."""
        market = book.market
        qty = market.floor_qty(qty)
        if qty <= 0.0:
            return 0.0
        filled = self._fill(book, resting.order, qty, resting.price, True, now, out)
        resting.remaining = market.clean_qty(resting.remaining - filled)
        if resting.remaining <= 0.0:
            self._done(book, resting, now, "", out)
        elif filled < qty:  # a reduce-only order cut to the position: the rest expires
            self._done(book, resting, now, "expired", out)
        return filled

    def _trigger(self, book: _Book, stop: Resting, now: int, out: list) -> None:
        order, qty = stop.order, stop.remaining
        self._done(book, stop, now, "", out)
        left = self._take(book, order, qty, _INF * order.side, now, out)
        if left > 0.0:
            out.append(OrderDone(book.symbol, now, order.client_id, "expired"))

    def _take(self, book: _Book, order: Order, qty: float, limit_px: float, now: int, out: list) -> float:
        """A taker order walks the book up to ``limit_px``; returns what did not fill."""
        side, quote, market = order.side, book.quote, book.market
        wanted = qty
        if order.reduce_only:
            held = book.position.qty
            room = -held if side > 0 else held
            if room <= 0.0:
                return wanted
            qty = min(qty, room)
        if book.taken_for is not quote:
            book.taken_for, book.taken_bid, book.taken_ask = quote, 0.0, 0.0
        if side > 0:
            touch, touch_qty, skip = quote.ask, quote.ask_qty, book.taken_ask
            bound = market.floor_price(touch * (1.0 + self._max_slip))
            worst = limit_px if limit_px < bound else bound
            depth = book.depth.asks if book.depth is not None else ()
        else:
            touch, touch_qty, skip = quote.bid, quote.bid_qty, book.taken_bid
            bound = market.ceil_price(touch * (1.0 - self._max_slip))
            worst = limit_px if limit_px > bound else bound
            depth = book.depth.bids if book.depth is not None else ()
        levels = [(touch, touch_qty)]
        levels += [level for level in depth if side * (level[0] - touch) > 0.0]
        synthetic = max(market.floor_qty(self._level_fraction * touch_qty), market.lot)
        fills, left = walk(market, side, qty, levels, skip, worst, self._spacing_ticks * market.tick, synthetic)
        taken = 0.0
        for price, size in fills:
            taken += self._fill(book, order, size, price, False, now, out)
        if side > 0:
            book.taken_ask += taken
        else:
            book.taken_bid += taken
        return market.clean_qty(wanted - taken)

    def _fill(self, book: _Book, order: Order, qty: float, price: float, maker: bool, now: int, out: list) -> float:
        """Book one execution; a reduce-only order is cut to the position. Returns the qty filled."""
        position, side = book.position, order.side
        if order.reduce_only:
            room = -position.qty if side > 0 else position.qty
            if room <= 0.0:
                return 0.0
            if qty > room:
                qty = room
        notional = price * qty
        if maker:
            fee = notional * self._maker
            self._maker_fees += fee
        else:
            fee = notional * self._taker
            self._taker_fees += fee
        self._fills += 1
        self._volume += notional
        mid = book.mid()
        self.portfolio.apply_fill(position, book.market, side, qty, price, fee, book.leverage, now, mid)
        out.append(Fill(book.symbol, now, order.client_id, price, qty, side, fee))
        self._position_changed(book)
        return qty

    # ---- margin, liquidation, funding ---------------------------------------------------------

    def _position_changed(self, book: _Book) -> None:
        p = book.position
        if p.qty == 0.0:
            book.liq_px = 0.0
        else:
            book.liq_px = liquidation_price(book.tiers, 1 if p.qty > 0.0 else -1, abs(p.qty), p.entry, p.margin_usdt)
        book.refresh()

    def _check_liquidation(self, book: _Book, mark: float, now: int, out: list) -> None:
        qty, liq = book.position.qty, book.liq_px
        if (qty > 0.0 and mark <= liq) or (qty < 0.0 and mark >= liq > 0.0):
            self._liquidate(book, now, out)

    def _liquidate(self, book: _Book, now: int, out: list) -> None:
        position, price = book.position, book.liq_px
        qty, side, margin = abs(position.qty), (-1 if position.qty > 0.0 else 1), position.margin_usdt
        left = margin + position.qty * (price - position.entry)  # what is left of the margin at that price
        fee = min(self._liq_fee_rate * qty * price, max(left, 0.0))
        self._liquidations += 1
        self._liq_fees += fee
        self._margin_lost += margin
        client_id = f"liquidation-{self._liquidations}"
        self.portfolio.apply_fill(position, book.market, side, qty, price, left, book.leverage, now, price)
        self._position_changed(book)
        out.append(Liquidation(book.symbol, now, side, qty, price, fee, margin))
        # The engine books the same loss from this fill: PnL to the price, less all that was left.
        out.append(Fill(book.symbol, now, client_id, price, qty, side, left))
        for resting in book.buys + book.sells + book.stops:
            self._done(book, resting, now, "cancelled", out)

    def _pay_funding(self, book: _Book, now: int, rate: float, mark_px: float, out: list) -> None:
        position = book.position
        if position.qty == 0.0:
            return
        paid = position.qty * mark_px * rate  # longs pay when the rate is positive
        self.portfolio.cash_usdt -= paid
        position.margin_usdt -= paid  # isolated: funding settles against the position's margin
        self._funding += paid
        out.append(FundingPayment(book.symbol, now, rate, mark_px, paid))
        self._position_changed(book)
        self._check_liquidation(book, mark_px, now, out)

    def _settle_funding(self, now: int, out: list) -> None:
        for book in self._books.values():
            if book.position.qty != 0.0 and book.quote is not None:
                self._pay_funding(book, now, self._funding_rate, book.mid(), out)

    # ---- helpers ------------------------------------------------------------------------------

    def _reschedule(self) -> None:
        arrival = self._inbox[0][0] if self._inbox else _INF
        self.next_ts = arrival if arrival < self._next_funding else self._next_funding

    @staticmethod
    def _then(first: Sequence, then: Sequence) -> Sequence:
        if not first:
            return then
        if not then:
            return first
        return [*first, *then]

    def _unknown(self, symbol: str) -> UnknownVenueSymbolError:
        return UnknownVenueSymbolError(f"no market limits for symbol {symbol!r}; known: {', '.join(self._books)}")

    def _book(self, symbol: str) -> _Book:
        try:
            return self._books[symbol]
        except KeyError:
            raise self._unknown(symbol) from None
