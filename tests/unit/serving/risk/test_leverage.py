import math

import pytest

from serving.config import LeverageConfig
from serving.risk.leverage import LeverageManager

MS = 1_000_000
# every adaptive factor at 1: rv at target, tight spread, deep book, confidence |2p-1| = 0.1
BASE = {"rv_fast": 2e-5, "spread_rel": 0.5e-4, "bid_qty": 2_000.0, "ask_qty": 2_000.0, "p_up": 0.55}


def view(harness, **overrides):
    roles = {**BASE, **overrides}
    return harness.view(bid=100.0, ask=100.0, **roles)


def adaptive(**config):
    return LeverageManager(LeverageConfig(mode="adaptive", adaptive_base=5.0, adaptive_min=0.5, adaptive_max=10.0,
                                          **config))  # fmt: skip


@pytest.mark.parametrize("mode, expected", [("conservative", 2.0), ("aggressive", 10.0)])
def test_fixed_modes(harness, mode, expected):
    lm = LeverageManager(LeverageConfig(mode=mode, conservative=2.0, aggressive=10.0))
    assert lm.target(view(harness, rv_fast=1e-3, p_up=0.5), 0.3, 0.1, math.nan) == expected
    assert lm.capped(expected, 0, cap=4.0) == min(expected, 4.0)


@pytest.mark.parametrize(
    "overrides, drawdown, win_rate, expected",
    [
        ({}, 0.0, math.nan, 5.0),
        ({"rv_fast": 4e-5}, 0.0, math.nan, 2.5),  # twice the target volatility: half
        ({"rv_fast": 1e-3}, 0.0, math.nan, 1.25),  # floored at 0.25
        ({"spread_rel": 2e-4}, 0.0, math.nan, 2.5),  # a 2 bp spread vs the 1 bp reference: x0.5
        ({"bid_qty": 700.0}, 0.0, math.nan, 3.5),  # 70 k USDT of depth vs 100 k
        ({"p_up": 0.6}, 0.0, math.nan, 7.5),  # confident: x1.5
        ({"p_up": 0.5}, 0.0, math.nan, 2.5),  # undecided: x0.5
        ({}, 0.05, math.nan, 2.5),  # 5 % drawdown x sensitivity 10: x0.5
        ({}, 0.0, 0.75, 6.25),  # winning: x1.25
        ({}, 0.0, 0.25, 3.75),
        ({"p_up": 0.6, "rv_fast": 1e-6}, 0.0, 1.0, 10.0),  # clamped at adaptive_max
    ],
)
def test_adaptive_factors(harness, overrides, drawdown, win_rate, expected):
    lm = adaptive()
    assert lm.target(view(harness, **overrides), drawdown, win_rate, math.nan) == pytest.approx(expected)


def test_adaptive_smoothing_falls_fast_and_rises_slowly(harness):
    lm = adaptive(rise_ticks=99, fall_ticks=1)  # alphas 0.02 and 1.0
    assert lm.target(view(harness, rv_fast=4e-5), 0.0, math.nan, 5.0) == pytest.approx(2.5)
    assert lm.target(view(harness), 0.0, math.nan, 2.5) == pytest.approx(2.55)


def test_nan_inputs_keep_the_previous_leverage(harness):
    lm = adaptive()
    assert lm.target(view(harness, rv_fast=math.nan), 0.0, math.nan, 3.0) == 3.0
    assert lm.target(view(harness, p_up=math.nan), 0.0, math.nan, 3.0) == 3.0
    assert lm.capped(math.nan, 0, 10.0) == 0.0  # no reading yet: no leverage at all


def test_a_volatility_shock_cuts_at_once_then_cools_down():
    lm = adaptive(vol_shock_ratio=3.0, emergency_factor=0.5, emergency_cooldown_ms=1_000)
    assert lm.check_emergency(0, 2.0, 0.0) == "" and lm.capped(5.0, 0, 10.0) == 5.0
    assert "volatility shock" in lm.check_emergency(10 * MS, 3.5, 0.0)
    assert lm.capped(5.0, 10 * MS, 10.0) == 2.5
    assert lm.check_emergency(20 * MS, 3.5, 0.0) == ""  # a running emergency is extended silently
    assert lm.capped(5.0, 1_019 * MS, 10.0) == 2.5
    assert lm.capped(5.0, 1_021 * MS, 10.0) == 5.0


def test_each_new_drawdown_step_triggers_once():
    lm = adaptive(drawdown_step_pct=2.0, emergency_cooldown_ms=0)
    assert lm.check_emergency(0, 1.0, 0.019) == ""
    assert "drawdown step 1" in lm.check_emergency(1, 1.0, 0.021)
    assert lm.check_emergency(2, 1.0, 0.035) == ""
    assert "drawdown step 2" in lm.check_emergency(3, 1.0, 0.041)
    lm.check_emergency(4, 1.0, 0.0)  # recovered: the steps re-arm
    assert "drawdown step 1" in lm.check_emergency(5, 1.0, 0.021)


def test_step_changes_says_when_the_engine_must_call_check_emergency():
    lm = adaptive(drawdown_step_pct=2.0, emergency_cooldown_ms=0)
    assert not lm.step_changes(0.019) and lm.step_changes(0.021)  # still step 0 / a new step
    lm.check_emergency(1, 1.0, 0.041)
    assert not lm.step_changes(0.045) and lm.step_changes(0.039) and lm.step_changes(0.061)


def test_never_above_the_cap():
    lm = adaptive()
    assert lm.capped(10.0, 0, 3.0) == 3.0


@pytest.mark.parametrize("mode", ["conservative", "aggressive", "adaptive"])
def test_each_mode_on_a_scripted_path(harness, mode):
    """Calm, then volatility doubles, then a shock (rv_fast / rv_slow = 4): the fixed modes hold
    until the shock halves them; adaptive falls as volatility rises, then halves too."""
    from serving.config import EngineConfig, RoutingConfig

    none = RoutingConfig(normal=(), trending=(), ranging=(), volatile=())
    config = EngineConfig(routing=none, leverage=LeverageConfig(mode=mode, conservative=2.0, aggressive=10.0,
                                                                fall_ticks=1, rise_ticks=1))  # fmt: skip
    h = harness(config, equity=10_000.0)
    st = h.engine.symbols[h.SYMBOL]
    path = []
    for rv_fast, rv_slow in [(2e-5, 2e-5)] * 5 + [(4e-5, 3e-5)] * 5 + [(8e-5, 2e-5)]:
        h.tick(100.0, p_up=0.55, rv_fast=rv_fast, rv_slow=rv_slow, bid_qty=2_000.0, ask_qty=2_000.0)
        path.append(st.leverage)
    calm, volatile, shock = path[4], path[9], path[10]
    if mode == "adaptive":
        assert calm == pytest.approx(5.0) and volatile == pytest.approx(2.5) and shock == pytest.approx(0.625)
    else:
        fixed = 2.0 if mode == "conservative" else 10.0
        assert calm == volatile == fixed and shock == fixed / 2
