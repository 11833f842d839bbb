import math

import pytest

from serving.config import MomentumBreakoutConfig, RoutingConfig
from serving.strategies import MomentumBreakout

UP = {"bb_z": 2.5, "vol_spike": 2.5, "momentum": 1.8, "efficiency": 0.5}
DOWN = {"bb_z": -2.5, "vol_spike": 2.5, "momentum": -1.8, "efficiency": 0.5}


@pytest.fixture()
def mb():
    return MomentumBreakout(MomentumBreakoutConfig())


def test_joins_a_confirmed_breakout_in_the_models_direction(harness, mb):
    assert mb.entry_side(harness.view(p_up=0.6, **UP)) == 1
    assert mb.entry_side(harness.view(p_up=0.4, **DOWN)) == -1


@pytest.mark.parametrize("missing", ["bb_z", "vol_spike", "momentum", "efficiency"])
def test_every_confirmation_is_needed(harness, mb, missing):
    roles = {**UP, missing: {"bb_z": 1.0, "vol_spike": 1.0, "momentum": 0.2, "efficiency": 0.05}[missing]}
    assert mb.entry_side(harness.view(p_up=0.6, **roles)) == 0


def test_the_model_must_agree(harness, mb):
    assert mb.entry_side(harness.view(p_up=0.52, **UP)) == 0
    assert mb.entry_side(harness.view(p_up=0.4, **UP)) == 0
    assert mb.entry_side(harness.view(p_up=math.nan, **UP)) == 0


def test_exits_when_momentum_turns(harness, mb):
    assert not mb.should_exit(harness.view(momentum=0.5), 1)
    assert mb.should_exit(harness.view(momentum=-1.2), 1)
    assert mb.should_exit(harness.view(momentum=1.2), -1)
    assert not mb.should_exit(harness.view(momentum=math.nan), 1)


def test_scripted_breakout_rides_the_move_and_trails_out(harness):
    """Breakout -> market buy -> price rises 1 % -> reverses -> the momentum trailing stop exits."""
    from serving.config import EngineConfig

    h = harness(EngineConfig(routing=RoutingConfig(normal=("momentum_breakout",))))
    h.tick(100.0)
    out = h.tick(100.0, p_up=0.65, **UP)
    entry = [o for r in out for o in r.orders if o.tag == "momentum_breakout"]
    assert entry and entry[0].type == "market" and entry[0].side == 1
    assert h.position == entry[0].qty
    price = 100.0
    for _ in range(10):  # +1 % with momentum
        price = round(price + 0.1, 1)
        h.tick(price, momentum=1.5)
    assert h.position > 0
    exits = []
    while not exits and price > 99.0:
        price = round(price - 0.1, 1)
        out = h.tick(price, momentum=-0.8)  # reversal: the trail tightens to 3 bp
        exits = [o for r in out for o in r.orders if o.reduce_only and o.type == "market"]
    assert h.position == 0
    # momentum trail: 10 bp x 0.3 behind the best bid 101.0 -> 100.97; first bid at or below: 100.9
    assert price == pytest.approx(100.9)
    assert any("trailing take-profit" in n for r in h.records for n in r.notes)
