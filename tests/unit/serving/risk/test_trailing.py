import math

import pytest

from serving.config import TrailingConfig
from serving.risk.trailing import MODES, TrailingRule, TrailingStop

ENTRY = 100.0
RISE = [round(100.0 + 0.01 * i, 2) for i in range(101)]  # 100.00 -> 101.00
FALL = [round(101.0 - 0.01 * i, 2) for i in range(1, 151)]  # then back to 99.50


def run(config: TrailingConfig, view, prices, side=1, entry=ENTRY, on_reversal=None):
    """Feed prices; returns (exit price or None, the trail). ``on_reversal`` edits the view once
    the path turns down."""
    trail = TrailingStop(TrailingRule(config), side, entry)
    best = prices[0]
    for price in prices:
        if side * (price - best) < 0 and on_reversal:
            on_reversal(view)
        best = max(best, price) if side > 0 else min(best, price)
        if trail.update(view, price):
            return price, trail
    return None, trail


def first_at_or_below(level, prices=FALL):
    return next(p for p in prices if p <= level + 1e-9)


@pytest.mark.parametrize(
    "mode, settings, roles, distance",
    [
        ("fixed", {"fixed_bps": 8}, {}, 8e-4),
        ("atr", {"atr_mult": 3}, {"atr": 5e-4}, 15e-4),
        ("volatility", {"vol_mult": 3, "vol_horizon_ticks": 50}, {"rv_fast": 2e-5}, 3 * 2e-5 * math.sqrt(50)),
        ("ml", {"ml_mult": 1.0}, {"predicted_move": 0.002}, 0.002),
        ("momentum", {"momentum_bps": 10}, {"momentum": 1.0}, 10e-4),
    ],
)
def test_each_mode_exits_its_distance_below_the_peak(harness, mode, settings, roles, distance):
    predicted = roles.pop("predicted_move", math.nan)
    view = harness.view(tick=0.01, predicted_move=predicted, **roles)
    config = TrailingConfig(mode=mode, activation_bps=5, lock_fraction=0.2, **settings)
    exit_price, trail = run(config, view, RISE + FALL)
    level = 101.0 * (1 - distance)
    assert trail.level == pytest.approx(level)
    assert exit_price == first_at_or_below(level)


def test_tick_mode_trails_whole_ticks_scaled_by_tick_volatility(harness):
    # 4 x 0.5 bp x 101 = 0.0202 -> 3 ticks of 0.01
    view = harness.view(tick=0.01, tick_vol=0.5)
    exit_price, trail = run(TrailingConfig(mode="tick", tick_mult=4, lock_fraction=0.2), view, RISE + FALL)
    assert trail.level == pytest.approx(100.97)
    assert exit_price == 100.97
    # quiet ticks: never closer than min_ticks
    exit_price, trail = run(TrailingConfig(mode="tick", min_ticks=2, lock_fraction=0.2),
                            harness.view(tick=0.01, tick_vol=0.001), RISE + FALL)  # fmt: skip
    assert trail.level == pytest.approx(100.98)


def test_momentum_mode_tightens_when_momentum_reverses(harness):
    view = harness.view(tick=0.01, momentum=1.0)
    config = TrailingConfig(mode="momentum", momentum_bps=10, momentum_reversal=0.5, momentum_tighten=0.3,
                            lock_fraction=0.2)  # fmt: skip
    steady, _ = run(config, harness.view(tick=0.01, momentum=1.0), RISE + FALL)
    reversed_, trail = run(config, view, RISE + FALL, on_reversal=lambda v: setattr(v, "momentum", -1.0))
    assert reversed_ == first_at_or_below(101.0 * (1 - 3e-4))
    assert reversed_ > steady  # gave back less


def test_ml_mode_falls_back_to_fixed_without_a_prediction(harness):
    exit_price, trail = run(TrailingConfig(mode="ml", fixed_bps=8, lock_fraction=0.2),
                            harness.view(tick=0.01), RISE + FALL)  # fmt: skip
    assert trail.level == pytest.approx(101.0 * (1 - 8e-4))


def test_not_armed_below_the_activation_threshold(harness):
    small = [100.0, 100.02, 100.04, 100.02, 100.0, 99.9]  # +4 bp, then back below entry
    exit_price, trail = run(TrailingConfig(mode="fixed", activation_bps=5, fixed_bps=1), harness.view(), small)
    assert exit_price is None and not trail.active  # losses are the hard stop's job


def test_profit_lock_never_gives_back_more_than_the_unlocked_share(harness):
    # a 90 bp trail would sit at 100.09; the lock keeps 60 % of the 1.00 peak profit: 100.60
    config = TrailingConfig(mode="fixed", fixed_bps=90, lock_fraction=0.6, max_distance_bps=100)
    exit_price, trail = run(config, harness.view(tick=0.01), RISE + FALL)
    assert trail.level == pytest.approx(100.6)
    assert exit_price == 100.6


def test_short_positions_mirror(harness):
    down = [round(100.0 - 0.01 * i, 2) for i in range(101)]
    up = [round(99.0 + 0.01 * i, 2) for i in range(1, 151)]
    exit_price, trail = run(TrailingConfig(mode="fixed", fixed_bps=8, lock_fraction=0.2), harness.view(tick=0.01),
                            down + up, side=-1)  # fmt: skip
    assert trail.level == pytest.approx(99.0 * (1 + 8e-4))
    assert exit_price == next(p for p in up if p >= trail.level - 1e-9)


def test_the_level_only_tightens_and_nan_keeps_it(harness):
    view = harness.view(tick=0.01, atr=5e-4)
    trail = TrailingStop(TrailingRule(TrailingConfig(mode="atr", atr_mult=3, lock_fraction=0.0)), 1, ENTRY)
    for price in RISE:
        trail.update(view, price)
    level = trail.level
    view.atr = 50e-4  # a wider distance must not loosen it
    trail.update(view, 101.0)
    assert trail.level == level
    view.atr = math.nan
    assert not trail.update(view, 101.0)
    assert trail.level == level


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_clamped_to_the_configured_band(harness, mode):
    huge = dict(fixed_bps=500, atr_mult=1000, momentum_bps=500, vol_mult=1000, ml_mult=100, tick_mult=1000)
    rule = TrailingRule(TrailingConfig(mode=mode, min_distance_bps=2, max_distance_bps=20, **huge))
    view = harness.view(tick=0.01, atr=1e-3, rv_fast=1e-3, predicted_move=0.05, tick_vol=5)
    assert rule.distance(view, 1, 100.0) == pytest.approx(20e-4)
