"""The decision path of autoscalp, the same in backtests, paper and live trading.

tick -> features -> model signal -> regime -> leverage -> position risk -> strategy -> risk veto
-> orders. The engine has no I/O and no clock: time is the latest event's ``ts_ns`` (it never runs
backwards), and the same events in give the same orders out.

Driving it (a backtester or the daemon)::

    engine = Engine(EngineConfig(), feature_names, [MarketLimits(...)], equity_usdt=10_000)
    record = engine.on_tick(quote, features, p_up, predicted_move, model_ok)   # every book update
    record = engine.on_trade(trade)            # freshness only
    record = engine.on_fill(fill)              # positions, stops
    record = engine.on_order_done(done)        # cancels confirmed, rejects, expiries
    record = engine.on_funding(payment)        # a funding settlement on our position
    record = engine.on_clock(ts_ns)            # timer: stale data, timeouts (e.g. every 100 ms)
    record = engine.halt(ts_ns, reason) / engine.pause(ts_ns, reason) / engine.resume(ts_ns)  # the operator
    engine.warming = "why"                     # a model warming up: no new exposure, no model failure
    record = engine.retune(config, ts_ns)      # another version's strategy parameters, when flat

Each returns a DecisionRecord, or None when nothing happened (unless ``record_every_tick``). The
venue applies ``record.cancels`` first, then ``record.orders``.

Ownership: one net position per symbol, owned by the strategy whose order opened it. The owner
manages it to flat (exits, trailing); a market maker owner keeps quoting, only the reducing side
once its regime no longer allows it. A flat symbol goes to the first strategy of the regime's
route that wants to trade.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from pipeline.errors import AutoscalpError
from serving.config import EngineConfig
from serving.events import DecisionRecord, Fill, FundingPayment, MarketLimits, OrderDone, Quote, Trade
from serving.execution import Execution, SymbolState
from serving.features import TickView, resolve_roles
from serving.markets import Market
from serving.orders import STOP as STOP_ROLE
from serving.portfolio import Portfolio
from serving.regime import REGIMES, RegimeDetector
from serving.risk.kill_switch import ACTIVE, HALTED, STATES, KillSwitch
from serving.risk.leverage import LeverageManager
from serving.risk.manager import RiskManager
from serving.risk.stops import near_liquidation
from serving.risk.trailing import TrailingStop
from serving.strategies import build_strategies

_NAN = float("nan")
_NDARRAY = np.ndarray
_INF = float("inf")
_MS = 1_000_000


class UnknownSymbolError(AutoscalpError):
    """An event for a symbol the engine was not given market limits for."""


class RetuneError(AutoscalpError):
    """Engine parameters that cannot change while trading (``Engine.retune``)."""


# What ``retune`` may change while trading: the strategies' parameters, routing and the leverage
# rules (what strategy tuning searches). The rest shapes state the engine holds (risk limits, the
# regime filter, the feature roles, the portfolio's win-rate window, the exposure cap) and waits for a
# restart.
RETUNABLE = frozenset({"market_making", "mean_reversion", "momentum_breakout", "routing", "leverage"})
_LEVERAGE_FIXED = ("portfolio_exposure_cap", "win_rate_window", "win_rate_min_trades")


class Engine:
    def __init__(self, config: EngineConfig, feature_names: Sequence[str], markets: Iterable[MarketLimits],
                 equity_usdt: float) -> None:  # fmt: skip
        self.config = config
        self.vector_names = tuple(feature_names)
        self.feature_names, self._index, self._pick = resolve_roles(config.features, feature_names)
        risk, lev = config.risk, config.leverage
        self.strategies = build_strategies(config)
        self._routes = tuple(tuple(self.strategies[n] for n in getattr(config.routing, r)) for r in REGIMES)
        markets = [Market(m) for m in markets]
        if not markets:
            raise AutoscalpError("the engine needs market limits for at least one symbol")
        self.portfolio = Portfolio([m.symbol for m in markets], equity_usdt, lev.win_rate_window,
                                   lev.win_rate_min_trades)  # fmt: skip
        self.symbols: dict[str, SymbolState] = {}
        for m in markets:
            # A symbol alone can never use more than the whole portfolio's cap either.
            cap = min(m.max_leverage, lev.symbol_caps.get(m.symbol, lev.default_symbol_cap), lev.portfolio_exposure_cap)
            limit = risk.position_limits_base.get(m.symbol, _INF)
            self.symbols[m.symbol] = SymbolState(m, self.portfolio.positions[m.symbol], RegimeDetector(config.regime),
                                                 cap, limit)  # fmt: skip
        self._states = tuple(self.symbols.values())
        self.kill = KillSwitch(risk.recover_ms)
        self.risk = RiskManager(self.kill, risk.max_notional_usdt, risk.max_orders_per_s, lev.portfolio_exposure_cap)
        self.leverage = LeverageManager(lev)
        self._view = TickView()
        self._stale_ns, self._cancel_timeout_ns = risk.stale_ms * _MS, risk.cancel_timeout_ms * _MS
        # equity at or below these fractions of the day's start / the peak halts
        self._daily_floor, self._dd_floor = 1.0 - risk.daily_loss_limit_pct * 1e-2, 1.0 - risk.max_drawdown_pct * 1e-2
        self._resume_next_day = risk.resume_next_day
        self._liq_buffer = risk.liquidation_buffer_bps * 1e-4
        self._trim = 1.0 + lev.trim_tolerance
        self._record_all = config.record_every_tick
        self._single = len(self._states) == 1  # on_tick's health fast path covers one symbol
        self.paused = ""  # the operator's reason while paused (pause()); empty: not paused
        # Why the model cannot be judged yet (the daemon sets it while a model warms up after a start):
        # its missing P(up) is no model failure, nothing new opens, positions are managed and keep
        # their stops. Empty: the model counts.
        self.warming = ""
        self._ex = Execution(
            self.risk, self.portfolio, self._states, config.client_id_prefix, risk.max_notional_usdt,
            lev.portfolio_exposure_cap, self._liq_buffer, risk.default_stop_loss_bps * 1e-4,
        )  # fmt: skip

    # ---- events -------------------------------------------------------------------------------

    def on_tick(self, quote: Quote, features, p_up: float, predicted_move: float = _NAN,
                model_ok: bool = True) -> DecisionRecord | None:  # fmt: skip
        """One book update with the features and model output computed on it.

        The hot path: everything here runs on every tick, so it is written out inline.
        """
        st = self.symbols.get(quote.symbol) or self._state(quote.symbol)
        ex = self._ex
        now, last = quote.ts_ns, ex.now
        if now > last:
            if last < 0:
                self._advance(now)
            ex.now = now
        else:
            now = last
        values = features[self._index].tolist() if type(features) is _NDARRAY else list(self._pick(features))
        bid, ask, bid_qty, ask_qty = quote.bid, quote.ask, quote.bid_qty, quote.ask_qty
        if not (0.0 < bid < ask < _INF and bid_qty >= 0.0 and ask_qty >= 0.0):
            ex.notes.append(f"invalid quote ignored: bid {bid} ask {ask}")
            self._health(now)
            return self._emit(st, "tick", values, p_up, predicted_move, model_ok)
        st.bid, st.ask, st.bid_qty, st.ask_qty = bid, ask, bid_qty, ask_qty
        st.mid = mid = 0.5 * (bid + ask)
        st.last_ts = ts = quote.ts_ns
        view = self._view
        view.ts_ns, view.bid, view.ask, view.bid_qty, view.ask_qty, view.mid = now, bid, ask, bid_qty, ask_qty, mid
        depth = bid_qty + ask_qty
        view.microprice = (bid * ask_qty + ask * bid_qty) / depth if depth > 0.0 else mid
        view.tick_size = st.market.tick
        view.set_features(values)
        view.p_up, view.predicted_move = p_up, predicted_move
        st.model_bad = not (model_ok and 0.0 <= p_up <= 1.0)  # NaN p_up fails the comparison

        portfolio, position, kill = self.portfolio, st.position, self.kill
        if position.qty != 0.0:
            portfolio.mark(position, mid)
        equity = portfolio.cash_usdt + portfolio.unrealised_usdt
        # The usual tick of one symbol: nothing for _health to do (each test is the negation of one
        # of its triggers, NaN equity included), so it is not called.
        if not (self._single and ts >= now - self._stale_ns and not (st.model_bad and not self.warming)
                and now < portfolio.next_day_ns and kill.state == ACTIVE and not kill.halt_pending
                and not equity <= portfolio.peak_usdt * self._dd_floor
                and not equity <= portfolio.day_start_usdt * self._daily_floor):  # fmt: skip
            self._health(now)

        rv_slow = view.rv_slow
        vol_ratio = view.rv_fast / rv_slow if rv_slow > 0.0 else _NAN
        regime = st.regime
        previous = regime.update(now, vol_ratio, view.efficiency, view.trend_strength)
        if previous >= 0:
            ex.notes.append(f"regime {REGIMES[previous]} -> {REGIMES[regime.regime]}")

        leverage = self.leverage
        drawdown = 1.0 - equity / portfolio.peak_usdt  # (_health moves no money)
        if vol_ratio >= leverage.shock_ratio or (drawdown > 0.0 and leverage.step_changes(drawdown)):
            note = leverage.check_emergency(now, vol_ratio, drawdown)
            if note:
                ex.notes.append(note)
        st.target_leverage = target = leverage.target(view, drawdown, portfolio.win_rate, st.target_leverage)
        st.leverage = leverage.capped(target, now, st.cap)

        orders = st.orders
        if orders.cancelling:
            orders.expire_cancels(now, self._cancel_timeout_ns)
        capacity = -1.0  # what the symbol may carry: the same all tick, so computed once when held
        if position.qty != 0.0:
            capacity = ex.capacity(st)
            self._manage_position(st, view, capacity)
        if kill.state == ACTIVE:
            self._trade(st, view, capacity)
        else:
            self._reduce(st)
        if ex.orders or ex.cancels or ex.vetoes or ex.notes or self._record_all:
            return self._emit(st, "tick", values, p_up, predicted_move, model_ok)
        return None

    def on_trade(self, trade: Trade) -> DecisionRecord | None:
        """A public trade: market data is alive. Decisions are made on book updates."""
        st = self._state(trade.symbol)
        now = self._advance(trade.ts_ns)
        if trade.ts_ns > st.last_ts:
            st.last_ts = trade.ts_ns
        self._health(now)
        return self._emit(st, "trade")

    def on_fill(self, fill: Fill) -> DecisionRecord | None:
        st = self._state(fill.symbol)
        now = self._advance(fill.ts_ns)
        if not (0.0 < fill.price < _INF and 0.0 < fill.qty < _INF and fill.side in (1, -1)
                and -_INF < fill.fee_usdt < _INF):  # fmt: skip
            # A fill we cannot book leaves the position unknown: stop trading until an operator looks.
            self._ex.notes.append(f"invalid fill ignored: {fill}")
            self.kill.halt(f"invalid fill from the venue ({fill.client_id})")
            self._health(now)
            return self._emit(st, "fill")
        position, orders = st.position, st.orders
        working = orders.filled(fill.client_id, fill.qty)
        if working is None:
            self._ex.notes.append(f"fill for unknown order {fill.client_id}: booked")
        leverage = working.leverage if working is not None and working.leverage > 0.0 else (st.leverage or 1.0)
        before = position.qty
        trip = self.portfolio.apply_fill(position, st.market, fill.side, fill.qty, fill.price, fill.fee_usdt,
                                         leverage, fill.ts_ns, st.mid if st.mid == st.mid else fill.price)  # fmt: skip
        if trip is not None:
            self._ex.notes.append(f"round trip closed: {trip:+.4f} USDT")
        after = position.qty
        self._health(now)  # a position appearing while HALTED turns it back to REDUCING
        if after == 0.0:
            self._flat(st)
        else:
            side = 1 if after > 0.0 else -1
            if before == 0.0 or (before > 0.0) != (after > 0.0):
                owner = working.strategy if working is not None and working.strategy is not None else st.owner
                self._set_owner(st, owner)
                st.trail = TrailingStop(owner.trailing, side, position.entry) if owner is not None else None
            elif st.trail is not None:
                st.trail.entry = position.entry
            exit_ = orders.exit
            if exit_ is not None and (exit_.remaining > abs(after) or exit_.order.side == side):
                self._ex.cancel(st, exit_)
            self._ex.protect(st)
        if self.kill.state != ACTIVE:
            self._reduce(st)
        return self._emit(st, "fill")

    def on_funding(self, payment: FundingPayment) -> DecisionRecord | None:
        """A funding settlement the venue booked on our position (``amount_usdt`` paid)."""
        st = self._state(payment.symbol)
        now = self._advance(payment.ts_ns)
        if not -_INF < payment.amount_usdt < _INF:
            self._ex.notes.append(f"invalid funding ignored: {payment}")
            return self._emit(st, "funding")
        self.portfolio.apply_funding(st.position, payment.amount_usdt)
        self._ex.notes.append(f"funding {payment.amount_usdt:+.4f} USDT at rate {payment.rate:+.6f}")
        self._health(now)
        return self._emit(st, "funding")

    def on_order_done(self, done: OrderDone) -> DecisionRecord | None:
        st = self._state(done.symbol)
        now = self._advance(done.ts_ns)
        working = st.orders.by_id.get(done.client_id)
        if working is None:
            return None
        ours = working.cancel_ns >= 0
        st.orders.remove(working)
        if not ours:
            self._ex.notes.append(f"{working.role} {done.client_id} {done.reason}")
            if working.role == STOP_ROLE and st.position.qty != 0.0:
                # A position without its stop is not held: close it.
                self._ex.exit(st, abs(st.position.qty), "risk", f"stop {done.reason}: closing the position")
        if st.position.qty == 0.0 and st.orders.entry is None and st.orders.bid is None and st.orders.ask is None:
            self._set_owner(st, None)
        self._health(now)
        return self._emit(st, "order_done")

    def on_clock(self, ts_ns: int) -> DecisionRecord | None:
        """A timer event: catches stale data and times out entries when no market data comes."""
        now = self._advance(ts_ns)
        for st in self._states:
            if st.orders.cancelling:
                st.orders.expire_cancels(now, self._cancel_timeout_ns)
            entry = st.orders.entry
            if entry is not None and now - entry.placed_ns >= entry.strategy.entry_timeout_ns:
                self._ex.cancel(st, entry)
        self._health(now)
        if self.kill.state != ACTIVE:
            for st in self._states:
                self._reduce(st)
        return self._emit(None, "clock")

    def halt(self, ts_ns: int, reason: str) -> DecisionRecord | None:
        """The operator halts trading: positions are closed, then nothing is sent until resume()."""
        self.kill.halt(f"operator: {reason}")
        return self.on_clock(ts_ns)

    def set_vector_names(self, feature_names: Sequence[str]) -> None:
        """A new model's feature vector (a champion swap): the roles are found in it again."""
        self.feature_names, self._index, self._pick = resolve_roles(self.config.features, feature_names)
        self.vector_names = tuple(feature_names)

    def retune(self, config: EngineConfig, ts_ns: int) -> DecisionRecord | None:
        """Trade on with ``config``'s strategy parameters (a new champion's tuned ones; its
        ``client_id_prefix`` is ignored). Only while no symbol holds a position: an open position's
        stop, trailing rule and leverage come from the parameters it was opened with, so changing
        them under it would change a risk already taken. Resting entries and quotes stay; the
        strategy of the same name in the new parameters owns them. Raises ``RetuneError`` when a
        position is open or ``config`` differs outside ``RETUNABLE``."""
        config = config.model_copy(update={"client_id_prefix": self.config.client_id_prefix})
        old, new = self.config.model_dump(), config.model_dump()
        fixed = [k for k in new if new[k] != old[k] and k not in RETUNABLE]
        fixed += [f"leverage.{k}" for k in _LEVERAGE_FIXED if new["leverage"][k] != old["leverage"][k]]
        if fixed:
            raise RetuneError(f"engine parameters {', '.join(fixed)} cannot change while trading "
                              "(a restart applies them)")  # fmt: skip
        held = [st.symbol for st in self._states if st.position.qty != 0.0]
        if held:
            raise RetuneError(f"positions open in {', '.join(held)}: strategy parameters change only when flat")
        now = self._advance(ts_ns)
        changes = _changes(old, new)
        self.config = config
        self.strategies = strategies = build_strategies(config)
        self._routes = tuple(tuple(strategies[n] for n in getattr(config.routing, r)) for r in REGIMES)
        lev, previous = config.leverage, self.leverage
        self.leverage = LeverageManager(lev)
        # an emergency cut in force stays in force, and its drawdown steps stay taken
        self.leverage.emergency_until_ns, self.leverage._dd_steps = previous.emergency_until_ns, previous._dd_steps
        self._trim = 1.0 + lev.trim_tolerance
        for st in self._states:
            st.cap = min(st.market.max_leverage, lev.symbol_caps.get(st.symbol, lev.default_symbol_cap),
                         lev.portfolio_exposure_cap)  # fmt: skip
            if st.owner is not None:
                st.owner = strategies[st.owner.name]
            for working in st.orders.by_id.values():
                if working.strategy is not None:
                    working.strategy = strategies[working.strategy.name]
        self._ex.notes.append(f"strategy parameters: {'; '.join(changes) or 'unchanged'}")
        self._health(now)
        return self._emit(None, "retune")

    def pause(self, ts_ns: int, reason: str) -> DecisionRecord | None:
        """The operator pauses: nothing new is opened and resting entries and quotes are pulled, but
        open positions keep their stops and exits (``halt`` closes them instead)."""
        self.paused = reason or "operator pause"
        self._ex.notes.append(f"paused: {self.paused}")
        for st in self._states:
            self._ex.pull(st, st.orders.entry, st.orders.bid, st.orders.ask)
        return self.on_clock(ts_ns)

    def resume(self, ts_ns: int) -> DecisionRecord | None:
        """The operator lifts a halt or a pause. The drawdown and the day's loss count again from the
        equity now (they accepted the loss so far), or the same limit would halt again at once."""
        self.paused = ""
        self.kill.resume()
        portfolio = self.portfolio
        portfolio.peak_usdt = portfolio.day_start_usdt = portfolio.equity_usdt
        self._ex.notes.append("operator resume")
        return self.on_clock(ts_ns)

    # ---- accessors ----------------------------------------------------------------------------

    def exposure_usdt(self, symbol: str) -> float:
        """Worst-case notional of a symbol: its position with every adding order filled, at the mid."""
        st = self.symbols[symbol]
        return st.worst_qty() * st.mid if st.mid == st.mid else 0.0

    # ---- the decision path ------------------------------------------------------------------------

    def _trade(self, st: SymbolState, view: TickView, capacity: float) -> None:
        orders = st.orders
        entry = orders.entry
        if entry is not None and view.ts_ns - entry.placed_ns >= entry.strategy.entry_timeout_ns:
            self._ex.cancel(st, entry)
            entry = None
        if not view.finite or self.paused or self.warming:  # no signal, paused or warming: no new exposure
            self._ex.pull(st, orders.entry, orders.bid, orders.ask)
            return
        allowed = self._routes[st.regime.regime]
        owner = st.owner
        if st.position.qty != 0.0:
            if owner is None and allowed:  # a position no strategy of ours opened (resumed after a restart):
                owner = self._adopt(st, allowed[0])  # the regime's first strategy manages it to flat
            if owner is not None and owner.makes_markets:
                self._ex.quote(st, view, owner, owner not in allowed, capacity)
            return
        if entry is not None:
            return
        for strategy in allowed:
            if strategy.makes_markets:
                self._set_owner(st, strategy)
                self._ex.quote(st, view, strategy, False)
                return
            side = strategy.entry_side(view)
            if side:
                self._ex.pull(st, None, orders.bid, orders.ask)
                self._set_owner(st, strategy)
                self._ex.enter(st, view, strategy, side)
                return
        self._ex.pull(st, None, orders.bid, orders.ask)
        self._set_owner(st, None)

    def _manage_position(self, st: SymbolState, view: TickView, capacity: float) -> None:
        """Protective exits first: stop backup, liquidation guard, trailing, the owner's exit, trim."""
        if st.orders.exit is not None:
            return
        qty = st.position.qty
        side = 1 if qty > 0.0 else -1
        price = view.bid if side > 0 else view.ask
        owner = st.owner
        tag = owner.name if owner is not None else "risk"
        if side * (price - st.stop_px) <= 0.0:
            self._ex.exit(st, abs(qty), "risk", "stop price crossed: exiting (backup of the venue stop)")
        elif near_liquidation(side, price, st.liq_px, self._liq_buffer):
            self._ex.exit(st, abs(qty), "risk", f"liquidation guard: {price} within buffer of {st.liq_px:.2f}")
        elif st.trail is not None and st.trail.update(view, price):
            self._ex.exit(st, abs(qty), tag, f"trailing take-profit at {st.trail.level:.6g}")
        elif owner is not None and not owner.makes_markets and owner.should_exit(view, side):
            self._ex.exit(st, abs(qty), tag, f"{owner.name} exit signal")
        elif not self.warming:  # (while a model warms the leverage's inputs are cold: no trim to 0x)
            if abs(qty) * view.mid > capacity * self._trim:
                trim = min(abs(qty), st.market.ceil_qty(abs(qty) - capacity / view.mid))
                self._ex.exit(st, trim, "risk", f"trim to {st.leverage:.2f}x leverage")

    def _reduce(self, st: SymbolState) -> None:
        """Kill switch not ACTIVE: cancel everything that adds exposure, close the position."""
        orders = st.orders
        halted = self.kill.state == HALTED
        for working in orders.live():
            if halted or not working.order.reduce_only:
                self._ex.cancel(st, working)
        if st.position.qty != 0.0 and orders.exit is None and not halted:
            self._ex.exit(st, abs(st.position.qty), "risk", f"kill switch: {self.kill.reason}")

    def _flat(self, st: SymbolState) -> None:
        ex, orders = self._ex, st.orders
        ex.pull(st, orders.stop, orders.exit)
        st.trail, st.stop_px, st.liq_px = None, _NAN, _NAN
        if orders.entry is None and orders.bid is None and orders.ask is None:
            self._set_owner(st, None)

    # ---- helpers ----------------------------------------------------------------------------------

    def _health(self, now: int) -> None:
        """Stale data, model failure, daily loss and drawdown -> the kill switch."""
        trouble = ""
        stale_before = now - self._stale_ns
        for st in self._states:
            if st.last_ts < stale_before:
                trouble = f"stale market data: {st.symbol} silent for {(now - st.last_ts) // _MS} ms"
                break
            if st.model_bad and not self.warming:
                trouble = f"model failure on {st.symbol}"
        kill, portfolio = self.kill, self.portfolio
        if now >= portfolio.next_day_ns:
            portfolio.roll_day(now)
        equity = portfolio.cash_usdt + portfolio.unrealised_usdt
        if equity <= portfolio.peak_usdt * self._dd_floor and not kill.halt_pending:
            kill.halt(f"max drawdown {1.0 - equity / portfolio.peak_usdt:.2%}")
        if equity <= portfolio.day_start_usdt * self._daily_floor and not kill.halt_pending:
            kill.halt(f"daily loss limit {1.0 - equity / portfolio.day_start_usdt:.2%}",
                      portfolio.next_day_ns if self._resume_next_day else -1)  # fmt: skip
        if not trouble and kill.state == ACTIVE and not kill.halt_pending:
            return
        flat = True
        if kill.halt_pending:
            flat = all(s.position.qty == 0.0 for s in self._states)
        note = kill.evaluate(now, trouble, flat)
        if note:
            self._ex.notes.append(note)
            for st in self._states:
                self._reduce(st)

    def _adopt(self, st: SymbolState, strategy):  # noqa: ANN001, ANN202
        """``strategy`` takes over a position without an owner, with its trailing rule from now."""
        self._set_owner(st, strategy)
        st.trail = TrailingStop(strategy.trailing, 1 if st.position.qty > 0.0 else -1, st.position.entry)
        return strategy

    def _set_owner(self, st: SymbolState, strategy) -> None:
        if strategy is not st.owner:
            before = st.owner.name if st.owner is not None else "none"
            self._ex.notes.append(f"strategy {before} -> {strategy.name if strategy is not None else 'none'}")
            st.owner = strategy

    def _state(self, symbol: str) -> SymbolState:
        st = self.symbols.get(symbol)
        if st is None:
            raise UnknownSymbolError(f"no market limits for symbol {symbol!r}; known: {', '.join(self.symbols)}")
        return st

    def _advance(self, ts_ns: int) -> int:
        """Event time: the latest event's, never backwards (a late event is processed at 'now')."""
        ex = self._ex
        if ts_ns > ex.now:
            if ex.now < 0:  # the first event: every feed is fresh from here
                for st in self._states:
                    st.last_ts = ts_ns
            ex.now = ts_ns
        return ex.now

    def _emit(self, st: SymbolState | None, event: str, values: Sequence[float] = (), p_up: float = _NAN,
              predicted_move: float = _NAN, model_ok: bool = True) -> DecisionRecord | None:  # fmt: skip
        ex = self._ex
        if not (ex.orders or ex.cancels or ex.vetoes or ex.notes or (self._record_all and values)):
            return None
        kill = self.kill
        if st is not None:
            regime, owner, leverage, symbol = REGIMES[st.regime.regime], st.owner, st.leverage, st.symbol
        else:
            regime, owner, leverage, symbol = "", None, _NAN, ""
        record = DecisionRecord(
            ex.now, symbol, event, self.feature_names, tuple(values), p_up, predicted_move, model_ok, regime,
            owner.name if owner is not None else "", leverage, STATES[kill.state], kill.reason,
            tuple(ex.cancels), tuple(ex.orders), tuple(ex.vetoes), tuple(ex.notes),
        )  # fmt: skip
        ex.cancels.clear()
        ex.orders.clear()
        ex.vetoes.clear()
        ex.notes.clear()
        return record


def _changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``path old -> new`` for each value that differs between two dumped configs."""
    out = []
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            out += _changes(before, value, f"{prefix}{key}.")
        elif value != before:
            out.append(f"{prefix}{key} {before!r} -> {value!r}")
    return out
