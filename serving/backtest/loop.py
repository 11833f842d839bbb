"""The backtest's hot loop: the engine and the simulated venue in event time, one event at a time.

This is the daemon in simulated time (DESIGN, principle 1): the same ``Engine`` objects, fed the
same ``Quote``/``Trade``/``Fill``/``OrderDone`` events. What is batched beforehand (features, model
probabilities: pure functions of the data, see signals.py) arrives as arrays; everything that
depends on our own orders (strategy, risk, venue) runs here, per event.

Order of work at each market event, as in live trading: first whatever the venue has due by then
(orders arriving after their latency, cancels), then the market event moves the venue's book (it
may fill resting orders), then the engine decides on the event and its orders go to the venue.
The engine's timer (``on_clock``) fires every ``clock_ms`` of event time. Written for speed: plain
Python lists instead of numpy scalars, locals instead of attribute lookups; nothing allocates on an
event unless something happens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.features.core import KIND_QUOTE, KIND_TRADE
from serving.backtest.data import ReplayData
from serving.backtest.signals import Signals
from serving.engine import Engine
from serving.events import DecisionRecord, Fill, FundingPayment, Liquidation, OrderDone, Quote, Trade
from serving.regime import REGIMES

_MS = 1_000_000
LIQUIDATION_PREFIX = "liquidation-"  # the venue's client id of a liquidation's closing fill


@dataclass
class LoopOutput:
    """Raw rows, turned into a ``serving.metrics.Ledger`` by the runner."""

    equity: list = field(default_factory=list)  # (ts_ns, equity, position_qty, notional, leverage, mid, regime)
    fills: list = field(default_factory=list)  # (ts_ns, symbol, client_id, side, price, qty, fee, liquidity, strategy, regime)
    funding: list = field(default_factory=list)  # (ts_ns, symbol, rate, amount_usdt)
    liquidations: int = 0
    records: int = 0
    orders: int = 0
    cancels: int = 0
    vetoes: int = 0
    events: int = 0


class ReplayLoop:
    """One symbol's replay. ``venue`` is a ``serving.venues.simulated.SimulatedVenue``."""

    def __init__(self, engine: Engine, venue, data: ReplayData, signals: Signals, clock_ms: int,
                 sample_ms: int, on_record: Callable[[DecisionRecord], None] | None = None) -> None:  # fmt: skip
        self.engine, self.venue, self.data, self.signals = engine, venue, data, signals
        self.symbol = data.symbol
        self.clock_ns, self.sample_ns = clock_ms * _MS, sample_ms * _MS
        self.on_record = on_record
        self.out = LoopOutput()
        self._tags: dict[str, str] = {}  # client_id -> strategy tag, for the fill list
        self._mid = math.nan
        self._state = engine.symbols[data.symbol]
        fees = venue.config.fees
        self._maker_rate, self._taker_rate = fees.maker_rate, fees.taker_rate

    # ---- the loop ---------------------------------------------------------------------------

    def run(self, progress: Callable[[int, int], None] | None = None, progress_every: int = 100_000) -> LoopOutput:
        """Replay the window; ``progress(done, total)`` is called every ``progress_every`` events."""
        events, signals, venue, engine = self.data.events, self.signals, self.venue, self.engine
        start, n = self.data.start, len(events)
        ts = events.ts_ns[start:].tolist()
        kinds = events.kind[start:].tolist()
        price, qty, side = events.price[start:].tolist(), events.qty[start:].tolist(), events.side[start:].tolist()
        bid, bid_qty = events.bid[start:].tolist(), events.bid_qty[start:].tolist()
        ask, ask_qty = events.ask[start:].tolist(), events.ask_qty[start:].tolist()
        row = int(np.searchsorted(signals.quote_index, start))
        features, p_up, ok = signals.features, signals.p_up.tolist(), signals.ok.tolist()
        funding = self._funding_schedule()
        next_funding = funding[0][0] if funding else math.inf
        symbol, nan, quote_kind, trade_kind = self.symbol, math.nan, KIND_QUOTE, KIND_TRADE
        on_tick, on_trade, on_clock = engine.on_tick, engine.on_trade, engine.on_clock
        venue_quote, venue_trade = venue.on_quote, venue.on_trade
        handle, deliver = self._handle, self._deliver
        next_clock = ts[0] if ts else 0
        next_sample = next_clock
        for i in range(n - start):
            t = ts[i]
            if t >= venue.next_ts:
                deliver(venue.advance(t), t)
            if t >= next_funding:
                self._pay_funding(funding.pop(0))
                next_funding = funding[0][0] if funding else math.inf
            if t >= next_clock:
                handle(on_clock(t), t)
                next_clock = t + self.clock_ns
            kind = kinds[i]
            if kind == quote_kind:
                quote = Quote(symbol, t, bid[i], bid_qty[i], ask[i], ask_qty[i])
                self._mid = 0.5 * (bid[i] + ask[i])
                fills = venue_quote(quote)
                if fills:
                    deliver(fills, t)
                record = on_tick(quote, features[row], p_up[row], nan, ok[row])
                row += 1
            elif kind == trade_kind:
                trade = Trade(symbol, t, price[i], qty[i], int(side[i]))
                fills = venue_trade(trade)
                if fills:
                    deliver(fills, t)
                record = on_trade(trade)
            else:  # a depth update: the features at the next quote include it; the engine decides on quotes
                record = None
            if record is not None:
                handle(record, t)
            if t >= next_sample:
                self._sample(t)
                next_sample = t + self.sample_ns
            if progress is not None and i % progress_every == 0:
                progress(i, n - start)
        if ts:
            deliver(venue.advance(ts[-1]), ts[-1])
            self._sample(ts[-1])
        self.out.events = n - start
        if progress is not None:
            progress(n - start, n - start)
        return self.out

    # ---- what happens when something happens -----------------------------------------------------

    def _handle(self, record: DecisionRecord | None, t: int) -> None:
        if record is None:
            return
        out = self.out
        out.records += 1
        if self.on_record is not None:
            self.on_record(record)
        if not (record.orders or record.cancels):
            out.vetoes += len(record.vetoes)
            return
        out.orders += len(record.orders)
        out.cancels += len(record.cancels)
        out.vetoes += len(record.vetoes)
        for order in record.orders:
            self._tags[order.client_id] = order.tag
        self._deliver(self.venue.submit(record, t), t)

    def _deliver(self, events: list, t: int) -> None:
        engine = self.engine
        for event in events:
            if type(event) is Fill:
                self._book_fill(event, self._liquidity(event))
                self._handle(engine.on_fill(event), t)
            elif type(event) is OrderDone:
                self._handle(engine.on_order_done(event), t)
            else:
                self._venue_event(event, t)

    def _venue_event(self, event, t: int) -> None:
        if type(event) is FundingPayment:  # the venue's amount is what we paid; the ledger's what we received
            self.out.funding.append((event.ts_ns, event.symbol, event.rate, -event.amount_usdt))
            self._handle(self.engine.on_funding(event), t)
        elif type(event) is Liquidation:  # the venue sends the closing Fill as well: booked there
            self.out.liquidations += 1

    def _liquidity(self, fill: Fill) -> str:
        if fill.client_id.startswith(LIQUIDATION_PREFIX):
            return "liquidation"
        notional = fill.price * fill.qty
        return "maker" if abs(fill.fee_usdt - notional * self._maker_rate) <= abs(fill.fee_usdt - notional * self._taker_rate) else "taker"

    def _book_fill(self, fill: Fill, liquidity: str) -> None:
        regime = REGIMES[self._state.regime.regime]
        self.out.fills.append((fill.ts_ns, fill.symbol, fill.client_id, fill.side, fill.price, fill.qty,
                               fill.fee_usdt, liquidity, self._tags.get(fill.client_id, "risk"), regime))  # fmt: skip
        self._sample(fill.ts_ns)

    def _sample(self, t: int) -> None:
        venue, st = self.venue, self._state
        mid = self._mid
        qty = venue.position(self.symbol).qty
        equity = venue.equity({self.symbol: mid}) if mid == mid else venue.wallet_usdt
        self.out.equity.append((t, equity, qty, abs(qty) * mid if mid == mid else 0.0, st.leverage, mid,
                                REGIMES[st.regime.regime]))  # fmt: skip

    # ---- funding ------------------------------------------------------------------------------

    def _funding_schedule(self) -> list[tuple[int, float, float]]:
        """(ts_ns, rate, mark) from the store's funding rows when the venue takes funding from the
        data; with a configured schedule the venue settles funding itself."""
        table = self.data.funding
        if self.venue.config.funding.source == "data" and table.num_rows:
            ts = table.column("ts_ns").to_pylist()
            rate = table.column("funding_rate").to_pylist()
            mark = table.column("mark_px").to_pylist()
            return [(t, r, m if m is not None else math.nan) for t, r, m in zip(ts, rate, mark) if r is not None]
        return []

    def _pay_funding(self, item: tuple[int, float, float]) -> None:
        t, rate, mark = item
        self._deliver(self.venue.on_funding(self.symbol, t, rate, mark if mark == mark else self._mid), t)
