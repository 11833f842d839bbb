"""Property tests over random event streams: whatever the market, the model and the venue do, the
engine's safety invariants hold after every event.

The streams mix ticks (price jumps, spreads, thin or deep books, feature scenarios that trigger each
strategy, NaN or infinite features, NaN or failing model output), timer events (long silences:
stale data), operator halts and resumes, and, when the venue lags cancels, confirmations arriving
late (so cancelled orders can still fill). Configurations vary the leverage mode and caps (some
above the exchange's maximum), the position limit, order sizes and the equity.

Checked after every event (``invariants``) or as each record leaves the engine (``at_acceptance``):
- leverage in force never above min(exchange max, per-symbol cap, portfolio cap); every order that
  adds exposure was accepted with its side's worst case (position + working orders) within
  leverage x equity, and all symbols' worst cases within the portfolio cap;
- |position| never above its limit, even when a cancel races a fill;
- in REDUCING only reduce-only orders, each against the position and no larger than it;
- in HALTED no order at all;
- a position never exists without a reduce-only stop covering all of it;
- no NaN or infinity reaches an order, and a non-finite feature never yields an exposure-adding one;
- the same events give the same records (determinism).
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.config import (
    EngineConfig, LeverageConfig, MarketMakingConfig, MeanReversionConfig, MomentumBreakoutConfig, RegimeConfig,
    RiskConfig, RoutingConfig,
)  # fmt: skip
from serving.events import MARKET

ALL = ("market_making", "mean_reversion", "momentum_breakout")
SCENARIOS = [
    {},
    {"rsi": -0.7, "bb_z": -2.5, "vwap_dev": -0.002},  # oversold
    {"rsi": 0.7, "bb_z": 2.5, "vwap_dev": 0.002},  # overbought
    {"bb_z": 2.5, "vol_spike": 2.5, "momentum": 1.8, "efficiency": 0.5, "trend_strength": 2.0},  # breakout up
    {"bb_z": -2.5, "vol_spike": 2.5, "momentum": -1.8, "efficiency": 0.5, "trend_strength": -2.0},
    {"rv_fast": 5e-5},  # volatile
    {"rv_fast": 1e-4, "rv_slow": 2e-5},  # a volatility shock
    {"efficiency": 0.05},  # ranging
    {"momentum": -1.5, "bb_z": 0.0},  # reversal: exits
    {"ofi": 0.8, "book_imbalance": 0.9},
]
ROLES = list(EngineConfig().features.model_fields)
BAD = [math.nan, math.inf, -math.inf]

# One step: an optional extra event (mostly none), then a tick. Explicit weights keep halts and
# silences rare enough for positions to live a while.
EXTRAS = [None] * 40 + ["clock_short", "clock_stale", "flush", "flush", "halt", "resume"]
steps = st.tuples(
    st.sampled_from(EXTRAS),
    st.one_of(*[st.integers(-5, 5)] * 4, st.integers(-80, 80)),  # price move, in 1 bp ticks
    st.sampled_from([1, 10, 100, 100, 500, 2_500]),  # ms since the last event
    st.sampled_from(range(len(SCENARIOS))),
    st.sampled_from([0.2, 0.35, 0.5, 0.65, 0.8] * 8 + [0.0, 1.0, 0.5000001, math.nan]),  # p_up
    st.sampled_from([True] * 40 + [False]),  # model_ok
    st.tuples(st.sampled_from([False] * 15 + [True]), st.sampled_from(ROLES), st.sampled_from(BAD)),  # a bad feature
    st.sampled_from([1, 1, 2, 5]),  # spread, in ticks
    st.sampled_from([0.01, 2.0, 500.0]),  # top-of-book size
)
streams = st.lists(steps, min_size=30, max_size=150)

configs = st.builds(
    lambda mode, fixed, symbol_cap, portfolio_cap, limit, rate, routing, sizes: EngineConfig(
        routing=RoutingConfig(normal=routing, trending=routing, ranging=routing, volatile=routing),
        regime=RegimeConfig(confirm_ticks=2, min_dwell_ms=0),
        leverage=LeverageConfig(mode=mode, conservative=fixed, aggressive=fixed * 3, adaptive_max=fixed * 3,
                                default_symbol_cap=symbol_cap, portfolio_exposure_cap=portfolio_cap),  # fmt: skip
        risk=RiskConfig(position_limits_base={"BTC/USDT:USDT": limit}, max_orders_per_s=rate, stale_ms=3_000,
                        recover_ms=1_000, daily_loss_limit_pct=2.0, max_drawdown_pct=4.0),  # fmt: skip
        # large sizes make the risk checks bind (a replacement quote while the old one's cancel is
        # in flight could otherwise overshoot the limits)
        market_making=MarketMakingConfig(quote_fraction=sizes[0], max_inventory_fraction=sizes[1]),
        mean_reversion=MeanReversionConfig(order_fraction=sizes[2], entry_type="market" if sizes[2] > 0.5 else "limit"),
        momentum_breakout=MomentumBreakoutConfig(order_fraction=sizes[2]),
    ),
    st.sampled_from(["conservative", "aggressive", "adaptive"]),
    st.sampled_from([1.0, 5.0, 20.0]),
    st.sampled_from([3.0, 10.0, 100.0]),  # per-symbol cap (the exchange's max is 50)
    st.sampled_from([2.0, 10.0, 75.0]),
    st.sampled_from([5.0, 200.0, math.inf]),  # position limit, coins at ~100 USDT
    st.sampled_from([2, 20]),
    st.sampled_from([ALL, ALL[::-1], ("mean_reversion",), ("market_making",)]),
    st.sampled_from([(0.2, 0.6, 0.5), (0.5, 1.0, 1.0), (1.0, 1.0, 1.0)]),
)

PROFILE = settings(
    max_examples=150, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def replay(harness, config, equity, lag, stream, check, on_record=None):
    h = harness(config, equity=equity, cancel_lag=lag)
    h.on_record = on_record
    price = 100.0
    for step in stream:
        before = h.engine.kill.state
        extra, move, dt_ms, scenario, p_up, model_ok, broken, spread, size = step
        out: list = []
        if extra == "clock_short":
            out += h.clock(100)
        elif extra == "clock_stale":
            out += h.clock(6_000)
        elif extra == "flush":
            out += h.flush()
        elif extra is not None:
            h.feed(h.engine.halt(h.now, "test") if extra == "halt" else h.engine.resume(h.now), out)
        price = max(50.0, round(price + move * 0.01, 2))
        roles = dict(SCENARIOS[scenario])
        if broken[0]:
            roles[broken[1]] = broken[2]
        out += h.tick(price, round(price + spread * 0.01, 2), dt_ms=dt_ms, p_up=p_up, model_ok=model_ok,
                      bid_qty=size, ask_qty=size, **roles)  # fmt: skip
        check(h, before, out)
    return h


def invariants(h, state_before, records):
    engine = h.engine
    lev_cfg, risk_cfg = engine.config.leverage, engine.config.risk
    for symbol, s in engine.symbols.items():
        cap = min(s.market.max_leverage, lev_cfg.default_symbol_cap, lev_cfg.portfolio_exposure_cap)
        # leverage never above any cap
        assert 0.0 <= s.leverage <= cap + 1e-12, (s.leverage, cap)
        # position never above its limit (cancelled orders may still have filled in flight)
        assert abs(s.position.qty) <= risk_cfg.position_limits_base.get(symbol, math.inf) + 1e-9
        # a position never exists without a stop covering all of it
        if s.position.qty != 0.0:
            stop = s.orders.stop
            assert stop is not None, f"{symbol}: position {s.position.qty} without a stop"
            assert stop.remaining == abs(s.position.qty) and stop.order.side * s.position.qty < 0
            assert stop.order.reduce_only and stop.order.type == "stop"
    for record in records:
        assert record.leverage != record.leverage or record.leverage <= 50.0
        for order in record.orders:
            # no NaN (or nonsense) reaches an order
            assert math.isfinite(order.qty) and order.qty > 0.0
            assert (order.price == 0.0) if order.type == MARKET else (math.isfinite(order.price) and order.price > 0)
        if record.kill_state == "halted":
            assert not record.orders, "an order while HALTED"  # in HALTED no order at all
        if record.kill_state == "reducing":
            assert all(o.reduce_only for o in record.orders), "an exposure-adding order while REDUCING"
        if record.event == "tick" and not all(math.isfinite(x) for x in record.features):
            # a NaN (or infinite) feature is no signal: nothing that adds exposure
            assert all(o.reduce_only for o in record.orders), "an order from a non-finite feature"


def at_acceptance(h, record):
    """Right as the engine returns a record, before the venue acts: a reduce-only order is against
    the position and no larger (so it cannot add exposure: in REDUCING these are the only orders);
    every other order was accepted within the symbol's leverage x equity on its side, and within the
    portfolio cap across symbols."""
    engine = h.engine
    equity = engine.portfolio.equity_usdt
    for o in record.orders:
        s = engine.symbols[o.symbol]
        if o.reduce_only:
            assert o.side * s.position.qty < 0 and o.qty <= abs(s.position.qty) + 1e-9
            continue
        worst = s.position.qty + s.orders.buy_open if o.side > 0 else s.orders.sell_open - s.position.qty
        assert worst * s.mid <= s.leverage * equity * (1 + 1e-9) + 1e-6
        total = sum(x.worst_qty() * x.mid for x in engine.symbols.values() if x.mid == x.mid)
        assert total <= engine.config.leverage.portfolio_exposure_cap * equity * (1 + 1e-9) + 1e-6


@PROFILE
@given(config=configs, equity=st.sampled_from([500.0, 10_000.0, 1e6]), lag=st.booleans(), stream=streams)
def test_safety_invariants_hold_on_any_event_stream(harness, config, equity, lag, stream):
    replay(harness, config, equity, lag, stream, invariants, at_acceptance)


@settings(PROFILE, max_examples=30)
@given(config=configs, lag=st.booleans(), stream=streams)
def test_same_events_in_same_orders_out(harness, config, lag, stream):
    def run():
        return [repr(r) for r in replay(harness, config, 10_000.0, lag, stream, lambda *_: None).records]

    assert run() == run()


@settings(PROFILE, max_examples=30)
@given(config=configs, lag=st.booleans(), stream=streams)
def test_the_health_fast_path_changes_no_record(harness, config, lag, stream):
    """Engine.on_tick skips _health on the usual tick of one symbol; calling it on every tick
    (the engine without the fast path) gives the same records. (The scripted stream below checks
    it where a tick itself trips the kill switch.)"""

    def run(make):  # noqa: ANN001, ANN202
        return [repr(r) for r in replay(make, config, 10_000.0, lag, stream, lambda *_: None).records]

    assert run(harness) == run(always_health(harness))


def always_health(harness):  # noqa: ANN001, ANN201
    """``harness`` whose engine runs _health on every tick, as before on_tick's fast path."""

    def make(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        h = harness(*args, **kwargs)
        h.engine._single = False
        return h

    return make


def test_the_streams_reach_the_interesting_states(harness):
    """Guard against vacuous properties: a scripted stream of the same kind opens a position,
    trails out, stops out, reduces on stale data and halts on the daily loss."""
    breakout_first = ALL[::-1]
    config = EngineConfig(
        routing=RoutingConfig(normal=breakout_first, trending=breakout_first, ranging=breakout_first, volatile=()),
        regime=RegimeConfig(confirm_ticks=2, min_dwell_ms=0),
        risk=RiskConfig(stale_ms=3_000, recover_ms=1_000, daily_loss_limit_pct=0.2),
    )
    fine = (False, "rv_fast", math.nan)
    calm = (None, 0, 100, 0, 0.5, True, fine, 1, 2.0)
    breakout = (None, 0, 100, 3, 0.8, True, fine, 1, 2.0)
    rise, fall = (None, 5, 100, 0, 0.5, True, fine, 1, 2.0), (None, -3, 100, 0, 0.5, True, fine, 1, 2.0)
    stale = ("clock_stale", 0, 100, 0, 0.5, True, fine, 1, 2.0)
    crash = (None, -80, 100, 0, 0.5, True, fine, 1, 2.0)
    stream = [calm, breakout] + [rise] * 10 + [fall] * 10 + [breakout, stale] + [calm] * 15 + [breakout, crash]
    notes, states, positions = set(), set(), []

    def spy(h, before, records):
        invariants(h, before, records)
        states.update(r.kill_state for r in records)
        notes.update(n.split(" ")[0] for r in records for n in r.notes)
        positions.append(h.position)

    h = replay(harness, config, 10_000.0, False, stream, spy, at_acceptance)
    assert any(positions) and positions[-1] == 0.0
    assert {"trailing", "kill"} <= notes and {"reducing", "halted"} <= states
    slow = replay(always_health(harness), config, 10_000.0, False, stream, lambda *_: None)
    assert [repr(r) for r in slow.records] == [repr(r) for r in h.records]
