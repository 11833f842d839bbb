import pytest

from serving.events import MarketLimits
from serving.markets import Market


def test_prices_and_quantities_land_exactly_on_the_grid():
    m = Market(MarketLimits("BTC/USDT:USDT", 125, 0.1, 0.001, 5))
    assert m.floor_price(60000.19) == 60000.1 and m.ceil_price(60000.11) == 60000.2
    assert m.floor_price(60000.1) == 60000.1  # already on the grid: unchanged
    assert m.floor_qty(0.1 + 0.2) == 0.3 and m.ceil_qty(0.0031) == 0.004
    assert m.clean_qty(0.1 + 0.2 - 0.3) == 0.0


def test_steps_that_are_not_powers_of_ten():
    m = Market(MarketLimits("X/USDT:USDT", 20, 0.25, 5, 5))
    assert m.floor_price(100.3) == 100.25 and m.ceil_price(100.3) == 100.5
    assert m.floor_qty(12) == 10.0


def test_nonsense_limits_are_refused():
    with pytest.raises(ValueError, match="positive"):
        Market(MarketLimits("X/USDT:USDT", 20, 0.0, 1, 5))
