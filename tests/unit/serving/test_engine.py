import json
import math

import pytest

from serving.config import (
    EngineConfig, LeverageConfig, MomentumBreakoutConfig, RiskConfig, RoutingConfig,
)  # fmt: skip
from serving.engine import Engine, UnknownSymbolError
from serving.events import Fill, MarketLimits, Order, OrderDone, Quote
from serving.features import MissingFeatureError

UP = {"bb_z": 2.5, "vol_spike": 2.5, "momentum": 1.8, "efficiency": 0.5}
NONE = RoutingConfig(normal=(), trending=(), ranging=(), volatile=())


def breakout_config(**overrides) -> EngineConfig:
    """Momentum breakout in every regime, fixed 2x leverage: sizes are easy to reason about."""
    everywhere = ("momentum_breakout",)
    settings = {
        "routing": RoutingConfig(normal=everywhere, trending=everywhere, ranging=everywhere, volatile=everywhere),
        "leverage": LeverageConfig(mode="conservative", conservative=2.0),
        **overrides,
    }
    return EngineConfig(**settings)


def enter_long(h, **roles):
    out = h.tick(100.0)
    out += h.tick(100.0, p_up=0.65, **{**UP, **roles})
    assert h.position > 0
    return out


def stops(engine, symbol):
    return engine.symbols[symbol].orders.stop


def test_construction_errors_are_one_line():
    with pytest.raises(MissingFeatureError):
        Engine(EngineConfig(), ["rv_tick_50"], [MarketLimits("X/USDT:USDT", 20, 0.01, 0.001, 5)], 1_000)


def test_unknown_symbol_is_refused(harness):
    h = harness()
    with pytest.raises(UnknownSymbolError, match="ETH/USDT:USDT"):
        h.engine.on_tick(Quote("ETH/USDT:USDT", h.T0, 1.0, 1.0, 1.1, 1.0), harness.features(), 0.5)


def test_an_entry_fill_gets_a_stop_for_the_whole_position_and_flat_cancels_it(harness):
    h = harness(breakout_config())
    out = enter_long(h)
    entry = next(o for o in h.orders(out) if o.tag == "momentum_breakout")
    assert entry.type == "market" and entry.qty == 99.995  # half of 2 x 10 k, at the mid 100.005
    stop = stops(h.engine, h.SYMBOL)
    assert stop.order.type == "stop" and stop.order.reduce_only and stop.order.side == -1
    assert stop.remaining == h.position and stop.order.price == pytest.approx(100.01 * (1 - 30e-4), abs=0.01)
    fill = next(r for r in out if r.event == "fill")
    assert fill.orders[0].type == "stop"
    out = h.tick(99.6)  # through the stop: the venue fills it
    assert h.position == 0 and stops(h.engine, h.SYMBOL) is None


def test_nan_features_never_produce_an_order(harness):
    h = harness(breakout_config())
    h.tick(100.0)
    out = h.tick(100.0, p_up=0.65, **{**UP, "tick_vol": math.nan})
    assert h.orders(out) == [] and h.position == 0
    h = harness(EngineConfig())
    assert h.orders(h.tick(100.0, rv_fast=math.inf)) == []


def test_model_failure_reduces_closes_the_position_then_recovers(harness):
    h = harness(breakout_config(risk=RiskConfig(recover_ms=1_000)))
    enter_long(h)
    out = h.tick(100.0, model_ok=False, p_up=0.65, **UP)
    assert out[0].kill_state == "reducing" and "model failure" in out[0].kill_reason
    exits = [o for o in h.orders(out) if o.type == "market"]
    assert exits and all(o.reduce_only for o in exits) and h.position == 0
    assert h.orders(h.tick(100.0, p_up=math.nan, **UP)) == []  # NaN p_up is a failure too
    assert h.orders(h.tick(100.0, dt_ms=500, p_up=0.65, **UP)) == []  # healthy, but not for long enough
    out = h.tick(100.0, dt_ms=600, p_up=0.65, **UP)
    assert out[0].kill_state == "active" and h.position > 0


@pytest.mark.parametrize("p_up", [math.nan, 1.5, -0.1])
def test_a_nan_or_impossible_probability_is_a_model_failure(harness, p_up):
    h = harness(breakout_config())
    enter_long(h)
    out = h.tick(100.0, p_up=p_up, **UP)
    assert out[0].kill_state == "reducing" and "model failure" in out[0].kill_reason and h.position == 0


def test_stale_data_reduces_on_the_clock(harness):
    h = harness(breakout_config(risk=RiskConfig(stale_ms=2_000, recover_ms=0)))
    enter_long(h)
    assert h.clock(1_000) == []
    out = h.clock(1_500)
    assert out[0].kill_state == "reducing" and "stale" in out[0].kill_reason
    assert h.position == 0
    out = h.tick(100.0)
    assert out and out[0].kill_state == "active"


def test_daily_loss_halts_flattens_and_lifts_the_next_day(harness):
    config = breakout_config(
        momentum_breakout=MomentumBreakoutConfig(order_fraction=1.0, stop_loss_bps=500),
        risk=RiskConfig(daily_loss_limit_pct=3.0, stale_ms=10**9),
    )
    h = harness(config)
    enter_long(h)  # 200 coins
    out = h.tick(98.4)  # -1.6 % on 2x: -3.2 %
    assert any("daily loss limit" in n for r in out for n in r.notes)
    assert h.position == 0 and h.engine.kill.state == 2  # flat, so HALTED at once
    out = h.tick(98.4, p_up=0.65, **UP) + h.clock(1_000)
    assert h.orders(out) == []
    h.now = h.T0 + 86_400 * 10**9  # the next UTC day
    out = h.tick(98.4, p_up=0.65, **UP)
    assert out[0].kill_state == "active" and h.position > 0


def test_max_drawdown_halts_until_resume(harness):
    config = breakout_config(
        momentum_breakout=MomentumBreakoutConfig(order_fraction=1.0, stop_loss_bps=500),
        risk=RiskConfig(max_drawdown_pct=2.0, daily_loss_limit_pct=50.0, stale_ms=10**9),
    )
    h = harness(config)
    enter_long(h)
    h.tick(98.9)
    assert h.engine.kill.state == 2 and "max drawdown" in h.engine.kill.reason and h.position == 0
    h.now += 10 * 86_400 * 10**9
    assert h.orders(h.tick(98.9, p_up=0.65, **UP)) == []
    out = []
    h.feed(h.engine.resume(h.now), out)
    assert h.engine.kill.state == 0
    assert h.tick(98.9, p_up=0.65, **UP) and h.position > 0


def test_a_volatility_shock_trims_the_open_position(harness):
    config = breakout_config(momentum_breakout=MomentumBreakoutConfig(order_fraction=1.0, stop_loss_bps=500))
    h = harness(config)
    enter_long(h)
    before = h.position
    out = h.tick(100.0, rv_fast=8e-5, rv_slow=2e-5)  # rv ratio 4: an emergency halves leverage
    assert any("emergency leverage cut" in n for r in out for n in r.notes)
    trims = [o for o in h.orders(out) if o.type == "market"]
    assert trims and trims[0].reduce_only and trims[0].side == -1
    assert h.position == pytest.approx(before / 2, rel=0.01)
    assert stops(h.engine, h.SYMBOL).remaining == h.position  # the stop follows the position


def test_stop_is_pulled_inside_the_liquidation_buffer(harness):
    config = breakout_config(
        leverage=LeverageConfig(mode="conservative", conservative=50.0, default_symbol_cap=50.0,
                                portfolio_exposure_cap=50.0),
        momentum_breakout=MomentumBreakoutConfig(order_fraction=0.1, stop_loss_bps=500),
    )  # fmt: skip
    h = harness(config, equity=1_000.0)
    enter_long(h)
    st = h.engine.symbols[h.SYMBOL]
    assert st.liq_px == pytest.approx(100.01 * (1 - 1 / 50 + 0.004))
    assert st.stop_px == pytest.approx(st.liq_px * 1.005, abs=0.01) and st.stop_px > st.liq_px


def test_if_the_venue_drops_the_stop_the_engine_still_exits(harness):
    h = harness(breakout_config())
    enter_long(h)
    stop = stops(h.engine, h.SYMBOL)
    h.venue.working.pop(stop.order.client_id)  # the venue lost it silently
    out = h.tick(99.5)
    assert any("backup of the venue stop" in n for r in out for n in r.notes) and h.position == 0


def test_a_rejected_stop_closes_the_position(harness):
    h = harness(breakout_config())
    enter_long(h)
    stop = stops(h.engine, h.SYMBOL)
    h.venue.working.pop(stop.order.client_id)
    out = []
    h.feed(h.engine.on_order_done(OrderDone(h.SYMBOL, h.now, stop.order.client_id, "expired")), out)
    assert any("stop expired" in n for r in out for n in r.notes) and h.position == 0


def test_a_fill_for_an_unknown_order_is_booked_and_protected(harness):
    h = harness(EngineConfig(routing=NONE))
    h.tick(100.0)
    record = h.engine.on_fill(Fill(h.SYMBOL, h.now, "manual-1", 100.0, 1.0, 1, 0.05))
    assert "unknown order" in record.notes[0] and h.engine.symbols[h.SYMBOL].position.qty == 1.0
    stop = record.orders[0]
    assert stop.type == "stop" and stop.qty == 1.0 and stop.price == pytest.approx(99.7)


def test_a_full_rate_window_builds_no_order_and_says_so_once(harness):
    h = harness(EngineConfig(risk=RiskConfig(max_orders_per_s=2)))
    price = 100.0
    for _ in range(6):  # big swings: the market maker wants to requote every tick
        price = 105.0 if price == 100.0 else 100.0
        h.tick(price, dt_ms=10)
    sent = [o for r in h.records for o in r.orders if not o.reduce_only]
    waits = [n for r in h.records for n in r.notes if "new exposure waits" in n]
    assert len(sent) == 2 and len(waits) == 1 and waits[0].startswith("rate: 2 orders")
    assert not [why for r in h.records for _, why in r.vetoes]  # nothing built just to be refused
    h.tick(price, dt_ms=1_100)  # the window has room again: quotes go out, the next wait is noted anew
    assert [o for o in h.records[-1].orders if not o.reduce_only]
    for _ in range(4):
        price = 105.0 if price == 100.0 else 100.0
        h.tick(price, dt_ms=10)
    assert len([n for r in h.records for n in r.notes if "new exposure waits" in n]) == 2


def test_the_risk_check_still_refuses_over_the_rate(harness):
    """The veto stays the last line: an order that reaches the check over the rate is refused."""
    h = harness(EngineConfig(risk=RiskConfig(max_orders_per_s=1)))
    h.tick(100.0)
    engine = h.engine
    st = engine.symbols[h.SYMBOL]
    order = Order("manual-9", h.SYMBOL, 1, "limit", 99.0, 1.0, True, False, "test")
    why = engine.risk.check(order, 0.0, st.orders.buy_open, st.orders.sell_open, st.mid, st.position_limit,
                            0.0, 10.0, 1e9, 0.0, h.now)  # fmt: skip
    assert why.startswith("rate: 1 orders")


def test_operator_halt_and_resume(harness):
    h = harness(breakout_config())
    enter_long(h)
    out = []
    h.feed(h.engine.halt(h.now, "maintenance"), out)
    assert h.position == 0 and h.engine.kill.state == 2 and "operator: maintenance" in h.engine.kill.reason
    h.feed(h.engine.resume(h.now), out)
    assert h.engine.kill.state == 0


def test_operator_pause_keeps_the_position_and_opens_nothing_new(harness):
    h = harness(breakout_config())
    enter_long(h)
    out = []
    h.feed(h.engine.pause(h.now, "news"), out)
    assert h.position > 0 and h.engine.kill.state == 0 and h.engine.paused == "news"
    st = h.engine.symbols[h.SYMBOL]
    assert st.orders.stop is not None  # the position keeps its protective stop
    h.feed(h.engine.halt(h.now, "flatten"), out)  # flatten closes; a paused engine opens nothing after
    h.feed(h.engine.resume(h.now), out)
    h.feed(h.engine.pause(h.now, "again"), out)
    out = h.tick(100.0, p_up=0.65, **UP)
    assert h.position == 0 and not [o for o in h.orders(out) if not o.reduce_only]
    h.feed(h.engine.resume(h.now), out)
    assert h.engine.paused == ""


def test_portfolio_cap_is_shared_across_symbols(harness):
    eth = MarketLimits("ETH/USDT:USDT", 50.0, 0.01, 0.001, 5.0)
    config = breakout_config(
        leverage=LeverageConfig(mode="conservative", conservative=2.0, portfolio_exposure_cap=3.0),
        momentum_breakout=MomentumBreakoutConfig(order_fraction=1.0),
    )
    h = harness(config, limits=(harness.LIMITS, eth))
    h.tick(100.0, symbol="ETH/USDT:USDT")
    enter_long(h)  # BTC: 2x
    out = h.tick(100.0, symbol="ETH/USDT:USDT", p_up=0.65, **UP)
    eth_entry = [o for o in h.orders(out) if o.symbol == "ETH/USDT:USDT" and o.type == "market"]
    total = sum(abs(s.position.qty) * s.mid for s in h.engine.symbols.values())
    assert eth_entry and total <= 3.0 * h.engine.portfolio.equity_usdt * 1.001


def test_records_explain_the_decision_and_serialise(harness):
    h = harness(breakout_config())
    h.tick(100.0)
    out = h.tick(100.0, p_up=0.65, **UP)
    tick = next(r for r in out if r.event == "tick")
    d = tick.to_dict()
    json.dumps(d)
    assert d["features"]["bbz_tick_200"] == 2.5 and d["model"]["p_up"] == 0.65
    assert d["strategy"] == "momentum_breakout" and d["regime"] == "normal" and d["leverage"] == 2.0
    assert d["risk"]["passed"] == [tick.orders[0].client_id] and d["kill_switch"]["state"] == "active"


def test_quiet_ticks_give_no_record_unless_asked(harness):
    h = harness(EngineConfig(routing=NONE))
    assert h.tick(100.0) == [] and h.tick(100.0) == []
    h = harness(EngineConfig(routing=NONE, record_every_tick=True))
    assert len(h.tick(100.0)) == 1


def test_same_events_same_orders(harness):
    def session():
        h = harness(EngineConfig())
        price = 100.0
        for i in range(300):
            price = round(price + (0.03 if (i * 7919) % 13 < 6 else -0.03), 2)
            roles = UP if i % 50 == 10 else {}
            h.tick(price, p_up=0.5 + ((i * 31) % 17 - 8) / 80, rv_fast=2e-5 * (1 + (i % 9) / 10), **roles)
        return [repr(r) for r in h.records]

    first = session()
    assert first and first == session()


def test_a_cancel_racing_a_fill_cannot_push_the_position_past_its_limit(harness):
    from serving.config import MarketMakingConfig

    config = EngineConfig(
        routing=RoutingConfig(normal=("market_making",)),
        market_making=MarketMakingConfig(quote_fraction=1.0, max_inventory_fraction=1.0),
        leverage=LeverageConfig(mode="conservative", conservative=2.0),
        risk=RiskConfig(position_limits_base={harness.SYMBOL: 5.0}),
    )
    h = harness(config, cancel_lag=True)
    h.tick(100.0)
    bid = next(o for o in h.orders() if o.side > 0)
    assert bid.qty == pytest.approx(5.0, abs=0.001)
    out = h.tick(99.99, ask=100.0)  # the bid is too aggressive now: cancelled, but the cancel is in flight
    assert bid.client_id in [c.client_id for r in out for c in r.cancels]
    assert any(why.startswith("position_limit") for r in out for _, why in r.vetoes)
    h.tick(99.9, ask=99.91)  # the old bid fills before its cancel lands
    assert 0 < h.position <= 5.0


def test_trades_keep_the_feed_fresh(harness):
    from serving.events import Trade

    h = harness(EngineConfig(routing=NONE, risk=RiskConfig(stale_ms=2_000)))
    h.tick(100.0)
    for _ in range(5):  # a quiet book, but trades keep printing
        h.now += 1_000 * h.MS
        assert h.engine.on_trade(Trade(h.SYMBOL, h.now, 100.0, 0.1, 1)) is None
    assert h.engine.kill.state == 0
    assert h.clock(2_500)[0].kill_state == "reducing"  # then silence


def test_exposure_counts_working_orders(harness):
    h = harness(EngineConfig())
    h.tick(100.0)
    st = h.engine.symbols[h.SYMBOL]
    assert h.engine.exposure_usdt(h.SYMBOL) == pytest.approx(max(st.orders.buy_open, st.orders.sell_open) * st.mid)
    assert h.engine.exposure_usdt(h.SYMBOL) > 0


def test_an_invalid_fill_is_not_booked_and_halts(harness):
    h = harness(breakout_config())
    enter_long(h)
    before = h.position
    out = []
    h.feed(h.engine.on_fill(Fill(h.SYMBOL, h.now, "as-1", math.nan, 1.0, 1, 0.0)), out)
    assert any("invalid fill" in n for r in out for n in r.notes)
    assert h.engine.kill.state == 2 and h.position == 0  # closed what it knew of, then halted
    assert before > 0
