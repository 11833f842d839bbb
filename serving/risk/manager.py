"""The risk manager's veto: every order passes ``check`` before it leaves the engine.

The checks, in RISK_CHECKS order (the first that fails is the reason):

- finite:         quantity and (for limit and stop orders) price are finite and positive;
- kill_switch:    HALTED refuses everything; REDUCING refuses all but reduce-only orders;
- reduce_only:    a reduce-only order is against the position and no larger than it. Such an
                  order can only lower exposure, so the remaining checks do not apply to it: a
                  stop or an exit is never refused for the rate or a cap;
- min_notional:   the exchange's minimum order value;
- rate:           at most ``max_orders_per_s`` exposure-adding orders in any second of event time
                  (the engine asks ``rate_full`` first and builds no such order while the window
                  is full, noting it once: a market maker would otherwise be refused every tick);
- position_limit: worst case (position plus every working order on that side, this one
                  included, all filled) within the symbol's limit in base coin;
- notional_limit: that worst case's notional within ``max_notional_usdt``;
- leverage_cap:   that notional within the symbol's leverage x equity;
- portfolio_cap:  with the other symbols' worst cases, within ``portfolio_exposure_cap`` x equity.
"""

from __future__ import annotations

from collections import deque

from serving.events import MARKET, Order
from serving.risk.kill_switch import ACTIVE, HALTED, KillSwitch

_INF = float("inf")
_NS_PER_S = 1_000_000_000


class RiskManager:
    __slots__ = ("kill", "_max_notional", "max_rate", "_portfolio_cap", "_sent")

    def __init__(self, kill: KillSwitch, max_notional_usdt: float, max_orders_per_s: int,
                 portfolio_exposure_cap: float) -> None:  # fmt: skip
        self.kill = kill
        self._max_notional = max_notional_usdt
        self.max_rate = max_orders_per_s
        self._portfolio_cap = portfolio_exposure_cap
        self._sent: deque[int] = deque()

    def check(self, order: Order, position: float, buy_open: float, sell_open: float, ref_price: float,
              position_limit: float, min_notional: float, leverage: float, equity: float,
              other_notional: float, now_ns: int) -> str:  # fmt: skip
        """'' when the order may go, else why not. ``ref_price`` values a market order."""
        qty = order.qty
        if not (0.0 < qty < _INF) or not (order.type == MARKET or 0.0 < order.price < _INF):
            return f"finite: qty {qty} / price {order.price} not finite and positive"
        state = self.kill.state
        if state == HALTED:
            return f"kill_switch: halted ({self.kill.reason})"
        side = order.side
        if order.reduce_only:
            if position * side >= 0.0:
                return "reduce_only: no position on the other side to reduce"
            if qty > abs(position) * (1.0 + 1e-9):
                return f"reduce_only: qty {qty} above the position {abs(position)}"
            return ""
        if state != ACTIVE:
            return f"kill_switch: reducing ({self.kill.reason}); only reduce-only orders"
        price = order.price if order.type != MARKET else ref_price
        if not (0.0 < price < _INF):
            return "finite: no price to value the order"
        if qty * price < min_notional:
            return f"min_notional: {qty * price:.2f} USDT below {min_notional}"
        if self.rate_full(now_ns):
            return f"rate: {self.max_rate} orders in the last second"
        worst = (position + buy_open + qty) if side > 0 else (sell_open - position + qty)
        if worst > position_limit * (1.0 + 1e-9):
            return f"position_limit: worst case {worst:g} above {position_limit:g}"
        notional = worst * price
        if notional > self._max_notional:
            return f"notional_limit: worst case {notional:.0f} USDT above {self._max_notional:.0f}"
        if notional > leverage * equity * (1.0 + 1e-9):
            return f"leverage_cap: worst case {notional:.0f} USDT above {leverage:.2f}x equity"
        if other_notional + notional > self._portfolio_cap * equity * (1.0 + 1e-9):
            return f"portfolio_cap: {other_notional + notional:.0f} USDT above {self._portfolio_cap:g}x equity"
        return ""

    def rate_full(self, now_ns: int) -> bool:
        """True while ``max_orders_per_s`` orders left in the last second: an exposure-adding order
        would be refused for the rate now."""
        sent = self._sent
        while sent and sent[0] <= now_ns - _NS_PER_S:
            sent.popleft()
        return len(sent) >= self.max_rate

    def sent(self, order: Order, now_ns: int) -> None:
        """Count an order that left (reduce-only ones too: they use the venue's rate as well)."""
        sent = self._sent
        sent.append(now_ns)
        if len(sent) > 4 * self.max_rate:  # check() prunes too; this bounds a run of exits alone
            while sent[0] <= now_ns - _NS_PER_S:
                sent.popleft()
