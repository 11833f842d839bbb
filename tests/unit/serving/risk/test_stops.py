import pytest

from serving.risk.stops import liquidation_price, near_liquidation, stop_price


def test_liquidation_price_isolated_margin():
    assert liquidation_price(1, 100.0, 10.0, 0.004) == pytest.approx(90.4)
    assert liquidation_price(-1, 100.0, 10.0, 0.004) == pytest.approx(109.6)
    assert liquidation_price(1, 100.0, 1.0, 0.004) == pytest.approx(0.4)  # 1x: nearly unliquidatable


def test_the_stop_loss_sits_at_its_distance_when_liquidation_is_far():
    liq = liquidation_price(1, 100.0, 5.0, 0.004)
    assert stop_price(1, 100.0, 30e-4, liq, 50e-4) == pytest.approx(99.7)
    assert stop_price(-1, 100.0, 30e-4, liquidation_price(-1, 100.0, 5.0, 0.004), 50e-4) == pytest.approx(100.3)


def test_the_stop_is_pulled_inside_the_liquidation_buffer():
    liq = liquidation_price(1, 100.0, 50.0, 0.004)  # 50x: liquidation at 98.4
    stop = stop_price(1, 100.0, 300e-4, liq, 50e-4)  # a 3 % stop would be beyond it
    assert stop == pytest.approx(98.4 * 1.005) and stop > liq
    liq = liquidation_price(-1, 100.0, 50.0, 0.004)
    assert stop_price(-1, 100.0, 300e-4, liq, 50e-4) == pytest.approx(liq * 0.995)


def test_near_liquidation():
    assert near_liquidation(1, 90.8, 90.4, 50e-4) and not near_liquidation(1, 91.0, 90.4, 50e-4)
    assert near_liquidation(-1, 109.1, 109.6, 50e-4) and not near_liquidation(-1, 108.9, 109.6, 50e-4)
