"""Engine.retune: another version's strategy parameters while trading, only when flat, only what
strategy tuning may change; and the warm-up hold (``engine.warming``): no model failure, nothing new."""

from __future__ import annotations

import math

import pytest

from serving.config import EngineConfig, LeverageConfig, RoutingConfig
from serving.engine import RetuneError
from serving.risk.kill_switch import ACTIVE

EVERYWHERE = ("momentum_breakout",)
UP = {"bb_z": 2.5, "vol_spike": 2.5, "momentum": 1.8, "efficiency": 0.5}


def breakout(**overrides) -> EngineConfig:
    routing = RoutingConfig(normal=EVERYWHERE, trending=EVERYWHERE, ranging=EVERYWHERE, volatile=EVERYWHERE)
    return EngineConfig(**{"routing": routing, "leverage": LeverageConfig(mode="conservative", conservative=2.0),
                           **overrides})  # fmt: skip


def tuned(config: EngineConfig, **params) -> EngineConfig:
    """``config`` with momentum_breakout parameters changed (what strategy tuning adopts)."""
    return config.model_copy(update={"momentum_breakout": config.momentum_breakout.model_copy(update=params)})


def test_flat_it_takes_the_new_parameters_and_says_which(harness):
    h = harness(breakout())
    h.tick(100.0)
    record = h.engine.retune(tuned(h.engine.config, stop_loss_bps=55.0, breakout_z=1.5), h.now)
    assert record.event == "retune" and record.orders == () and record.cancels == ()
    assert record.notes == ("strategy parameters: momentum_breakout.breakout_z 2.0 -> 1.5; "
                            "momentum_breakout.stop_loss_bps 30.0 -> 55.0",)
    assert h.engine.config.momentum_breakout.stop_loss_bps == 55.0
    assert h.engine.config.client_id_prefix == breakout().client_id_prefix
    h.tick(100.0, p_up=0.65, **UP)  # the next entry is protected by the new stop distance
    stop = h.engine.symbols[h.SYMBOL].orders.stop.order
    assert h.position > 0 and stop.price == pytest.approx(100.01 * (1 - 55e-4), abs=0.01)


def test_not_while_a_position_is_open_nor_what_shapes_held_state(harness):
    h = harness(breakout())
    h.tick(100.0)
    h.tick(100.0, p_up=0.65, **UP)
    assert h.position > 0
    before = h.engine.config
    with pytest.raises(RetuneError, match="positions open in BTC/USDT:USDT"):
        h.engine.retune(tuned(before, stop_loss_bps=55.0), h.now)
    flat = harness(breakout())
    risky = before.model_copy(update={"risk": before.risk.model_copy(update={"stale_ms": 9_000})})
    with pytest.raises(RetuneError, match="risk cannot change while trading"):
        flat.engine.retune(risky, flat.now)
    wider = before.model_copy(update={"leverage": before.leverage.model_copy(update={"win_rate_window": 7})})
    with pytest.raises(RetuneError, match="leverage.win_rate_window"):
        flat.engine.retune(wider, flat.now)
    assert h.engine.config is before


def test_resting_orders_belong_to_the_new_strategy_of_the_same_name(harness):
    h = harness(EngineConfig())
    h.tick(100.0, rv_fast=1e-4, rv_slow=1e-4)  # the market maker quotes (default routing, normal regime)
    quotes = list(h.engine.symbols[h.SYMBOL].orders.by_id.values())
    old = h.engine.strategies["market_making"]
    assert quotes and h.position == 0 and all(w.strategy is old for w in quotes)
    config = h.engine.config
    h.engine.retune(config.model_copy(update={"market_making": config.market_making.model_copy(
        update={"min_half_spread_bps": 7.0})}), h.now)  # fmt: skip
    new = h.engine.strategies["market_making"]
    assert new is not old and new._min_half == pytest.approx(7e-4)
    assert all(w.strategy is new for w in quotes) and h.engine.symbols[h.SYMBOL].owner is new


def test_a_warming_model_is_no_failure_and_opens_nothing(harness):
    h = harness(breakout())
    h.engine.warming = "v1 warming up"
    out = h.tick(100.0, p_up=math.nan, model_ok=False, **UP)
    out += h.tick(100.0, p_up=0.65, model_ok=False, **UP)
    assert h.orders(out) == [] and h.engine.kill.state == ACTIVE  # ACTIVE: the missing P(up) is not a failure
    h.engine.warming = ""
    out = h.tick(100.0, p_up=0.65, **UP)
    assert h.position > 0
