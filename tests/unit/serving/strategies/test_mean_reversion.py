import math

import pytest

from serving.config import MeanReversionConfig
from serving.strategies import MeanReversion

OVERSOLD = {"rsi": -0.7, "bb_z": -2.5, "vwap_dev": -0.002}
OVERBOUGHT = {"rsi": 0.7, "bb_z": 2.5, "vwap_dev": 0.002}


@pytest.fixture()
def mr():
    return MeanReversion(MeanReversionConfig(min_confirmations=2, model_edge=0.03))


def test_fades_an_oversold_market_when_the_model_expects_a_bounce(harness, mr):
    assert mr.entry_side(harness.view(p_up=0.6, **OVERSOLD)) == 1
    assert mr.entry_side(harness.view(p_up=0.4, **OVERBOUGHT)) == -1


def test_stays_out_when_the_model_disagrees(harness, mr):
    assert mr.entry_side(harness.view(p_up=0.5, **OVERSOLD)) == 0  # no edge
    assert mr.entry_side(harness.view(p_up=0.4, **OVERSOLD)) == 0  # model says down
    assert mr.entry_side(harness.view(p_up=0.6, **OVERBOUGHT)) == 0


def test_needs_enough_confirmations(harness, mr):
    assert mr.entry_side(harness.view(p_up=0.6, rsi=-0.7)) == 0  # one extreme of three
    assert mr.entry_side(harness.view(p_up=0.6, rsi=-0.7, bb_z=-2.5)) == 1
    strict = MeanReversion(MeanReversionConfig(min_confirmations=3))
    assert strict.entry_side(harness.view(p_up=0.6, rsi=-0.7, bb_z=-2.5)) == 0


def test_a_nan_indicator_never_counts(harness, mr):
    assert mr.entry_side(harness.view(p_up=0.6, rsi=math.nan, bb_z=math.nan, vwap_dev=-0.002)) == 0


def test_exits_back_at_the_mean(harness, mr):
    assert not mr.should_exit(harness.view(bb_z=-1.0), 1)
    assert mr.should_exit(harness.view(bb_z=0.0), 1)
    assert mr.should_exit(harness.view(bb_z=0.5), 1)
    assert not mr.should_exit(harness.view(bb_z=1.0), -1)
    assert mr.should_exit(harness.view(bb_z=-0.1), -1)
    assert not mr.should_exit(harness.view(bb_z=math.nan), 1)


def test_scripted_round_trip_through_the_engine(harness):
    """Oversold -> a post-only bid at the touch -> filled -> stop placed -> back at the mean -> exit."""
    h = harness()
    h.tick(100.0, efficiency=0.05)  # ranging: mean reversion first, then market making
    for _ in range(25):
        h.tick(100.0, efficiency=0.05)
    assert h.engine.symbols[h.SYMBOL].regime.regime == 2  # ranging
    before = len(h.records)
    out = h.tick(99.0, efficiency=0.05, p_up=0.6, **OVERSOLD)
    entry = [o for r in out for o in r.orders if o.tag == "mean_reversion"]
    assert len(entry) == 1 and entry[0].type == "limit" and entry[0].post_only and entry[0].price == 99.0
    assert entry[0].side == 1
    assert any("market_making -> mean_reversion" in n for r in h.records[before:] for n in r.notes)
    out = h.tick(98.9, ask=98.95, efficiency=0.05, p_up=0.6, **OVERSOLD)  # the ask comes down to our bid
    assert h.position == entry[0].qty
    stops = [o for r in out for o in r.orders if o.type == "stop"]
    assert stops and stops[-1].reduce_only and stops[-1].qty == entry[0].qty and stops[-1].side == -1
    assert stops[-1].price == pytest.approx(99.0 * (1 - 25e-4), abs=0.1)
    out = h.tick(99.2, efficiency=0.05, bb_z=-1.0, p_up=0.6)  # still below the mean: hold
    assert h.position > 0
    out = h.tick(99.5, efficiency=0.05, bb_z=0.1, p_up=0.5)  # back at the mean
    exits = [o for r in out for o in r.orders if o.reduce_only and o.type == "market"]
    assert exits and exits[0].qty == entry[0].qty
    assert h.position == 0
    assert any(c.client_id == stops[-1].client_id for r in out for c in r.cancels)  # the stop goes too
