"""Positions from fills, PnL, equity and drawdown, in USDT.

One net position per symbol (one-way mode), isolated margin: each increase posts
``notional / leverage`` of margin, a decrease releases margin pro rata, so the liquidation price of
a position does not move when it is partly closed. Equity = starting equity + realised PnL - fees
+ unrealised PnL at the last mid - funding paid. Funding comes out of the position's margin, as on
the exchange (so it moves the liquidation price), and counts in the round trip it was paid in. A round trip (flat to flat, or to a flip) counts as a
win or a loss for the win rate, fees included.
"""

from __future__ import annotations

from collections import deque

from serving.markets import Market

NS_PER_DAY = 86_400 * 1_000_000_000


class Position:
    __slots__ = ("symbol", "qty", "entry", "margin_usdt", "realised_usdt", "fees_usdt", "trip_pnl_usdt",
                 "unrealised_usdt", "mark", "opened_ns")  # fmt: skip

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.qty = 0.0  # signed, base coin
        self.entry = 0.0
        self.margin_usdt = 0.0
        self.realised_usdt = self.fees_usdt = self.trip_pnl_usdt = self.unrealised_usdt = 0.0
        self.mark = 0.0
        self.opened_ns = 0

    @property
    def leverage(self) -> float:
        """Entry notional / posted margin (the L of the liquidation formula)."""
        return abs(self.qty) * self.entry / self.margin_usdt if self.margin_usdt > 0 else 0.0


class Portfolio:
    __slots__ = ("positions", "cash_usdt", "unrealised_usdt", "peak_usdt", "day", "day_start_usdt",
                 "next_day_ns", "win_rate", "_wins", "_win_count", "_min_trades")  # fmt: skip

    def __init__(self, symbols, equity_usdt: float, win_rate_window: int, win_rate_min_trades: int = 1) -> None:
        if not equity_usdt > 0:
            raise ValueError("starting equity must be positive")
        self.positions = {symbol: Position(symbol) for symbol in symbols}
        self.cash_usdt = float(equity_usdt)
        self.unrealised_usdt = 0.0
        self.peak_usdt = self.day_start_usdt = float(equity_usdt)
        self.day = -1
        self.next_day_ns = -1  # when the next UTC day starts: roll_day is due
        self._wins: deque[int] = deque(maxlen=win_rate_window)
        self._win_count = 0
        self._min_trades = win_rate_min_trades
        self.win_rate = float("nan")  # share of winning round trips in the window; NaN until enough

    @property
    def equity_usdt(self) -> float:
        return self.cash_usdt + self.unrealised_usdt

    @property
    def drawdown(self) -> float:
        """Fraction below the equity peak (0 at the peak)."""
        return 1.0 - self.equity_usdt / self.peak_usdt

    @property
    def daily_loss(self) -> float:
        """Fraction lost since the start of the UTC day (negative when up)."""
        return 1.0 - self.equity_usdt / self.day_start_usdt

    def mark(self, position: Position, mid: float) -> None:
        """Revalue a position at the mid and track the equity peak (a flat one needs no marking)."""
        position.mark = mid
        unrealised = position.qty * (mid - position.entry)
        self.unrealised_usdt += unrealised - position.unrealised_usdt
        position.unrealised_usdt = unrealised
        equity = self.cash_usdt + self.unrealised_usdt
        if equity > self.peak_usdt:
            self.peak_usdt = equity

    def roll_day(self, now_ns: int) -> None:
        """Call when ``now_ns >= next_day_ns``: the daily loss counts from this equity."""
        self.day = now_ns // NS_PER_DAY
        self.next_day_ns = (self.day + 1) * NS_PER_DAY
        self.day_start_usdt = self.cash_usdt + self.unrealised_usdt

    def apply_fill(self, position: Position, market: Market, side: int, qty: float, price: float,
                   fee_usdt: float, leverage: float, ts_ns: int, mark: float) -> float | None:  # fmt: skip
        """Book one fill and revalue the position at ``mark``; returns the round trip's PnL (fees
        in) when the fill ended one, else None."""
        old = position.qty
        closed_trip = None
        new = market.clean_qty(old + side * qty)
        if old == 0.0 or (old > 0.0) == (side > 0):
            if old == 0.0:
                position.opened_ns, position.trip_pnl_usdt = ts_ns, 0.0
            position.entry = (abs(old) * position.entry + qty * price) / abs(new) if new else price
            position.margin_usdt += qty * price / leverage
            position.trip_pnl_usdt -= fee_usdt
        else:
            closing = min(qty, abs(old))
            pnl = closing * (price - position.entry) * (1.0 if old > 0.0 else -1.0)
            position.realised_usdt += pnl
            self.cash_usdt += pnl
            position.margin_usdt *= (abs(old) - closing) / abs(old)
            if new == 0.0 or (new > 0.0) != (old > 0.0):
                share = closing / qty  # of the fee, the part that closed the old trip
                closed_trip = position.trip_pnl_usdt + pnl - fee_usdt * share
                self._record_trip(closed_trip)
                position.trip_pnl_usdt = -fee_usdt * (1.0 - share)
                position.entry, position.margin_usdt = 0.0, 0.0
                if new != 0.0:  # a flip: the rest opens a new position at the fill price
                    position.entry, position.opened_ns = price, ts_ns
                    position.margin_usdt = abs(new) * price / leverage
            else:
                position.trip_pnl_usdt += pnl - fee_usdt
        position.qty = new
        position.fees_usdt += fee_usdt
        self.cash_usdt -= fee_usdt
        self.mark(position, mark)
        return closed_trip

    def apply_funding(self, position: Position, paid_usdt: float) -> None:
        """A funding settlement: ``paid_usdt`` left the account (negative: received)."""
        self.cash_usdt -= paid_usdt
        if position.qty != 0.0:
            position.margin_usdt -= paid_usdt
            position.trip_pnl_usdt -= paid_usdt

    def _record_trip(self, pnl_usdt: float) -> None:
        if len(self._wins) == self._wins.maxlen:
            self._win_count -= self._wins[0]
        won = 1 if pnl_usdt > 0.0 else 0
        self._wins.append(won)
        self._win_count += won
        n = len(self._wins)
        self.win_rate = self._win_count / n if n >= self._min_trades else float("nan")
