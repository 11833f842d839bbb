import math

import pytest

from serving.events import MarketLimits
from serving.markets import Market
from serving.portfolio import NS_PER_DAY, Portfolio

M = Market(MarketLimits("X", 50, 0.01, 0.001, 5))


@pytest.fixture()
def book():
    portfolio = Portfolio(["X"], 10_000.0, win_rate_window=3, win_rate_min_trades=2)
    return portfolio, portfolio.positions["X"]


def fill(portfolio, position, side, qty, price, fee=0.0, leverage=5.0, mark=None):
    return portfolio.apply_fill(position, M, side, qty, price, fee, leverage, 0, price if mark is None else mark)


def test_average_entry_margin_and_leverage(book):
    portfolio, pos = book
    fill(portfolio, pos, 1, 1.0, 100.0)
    fill(portfolio, pos, 1, 1.0, 102.0)
    assert pos.qty == 2.0 and pos.entry == pytest.approx(101.0)
    assert pos.margin_usdt == pytest.approx(40.4) and pos.leverage == pytest.approx(5.0)


def test_pnl_fees_and_equity(book):
    portfolio, pos = book
    fill(portfolio, pos, 1, 2.0, 100.0, fee=0.1)
    portfolio.mark(pos, 103.0)
    assert portfolio.equity_usdt == pytest.approx(10_000 - 0.1 + 6.0)
    assert fill(portfolio, pos, -1, 1.0, 104.0, fee=0.1, mark=104.0) is None  # partly closed
    assert pos.realised_usdt == pytest.approx(4.0) and pos.margin_usdt == pytest.approx(20.0)
    trip = fill(portfolio, pos, -1, 1.0, 99.0, fee=0.1, mark=99.0)
    assert pos.qty == 0.0 and trip == pytest.approx(4.0 - 1.0 - 0.3)
    assert portfolio.equity_usdt == pytest.approx(10_000 + 3.0 - 0.3)
    assert portfolio.unrealised_usdt == pytest.approx(0.0)


def test_a_flip_closes_one_trip_and_opens_the_next_at_the_fill(book):
    portfolio, pos = book
    fill(portfolio, pos, 1, 1.0, 100.0)
    trip = fill(portfolio, pos, -1, 3.0, 101.0, fee=0.3)
    assert trip == pytest.approx(1.0 - 0.1)
    assert pos.qty == -2.0 and pos.entry == 101.0 and pos.trip_pnl_usdt == pytest.approx(-0.2)
    assert pos.margin_usdt == pytest.approx(2 * 101.0 / 5.0)


def test_float_dust_does_not_leave_a_phantom_position(book):
    portfolio, pos = book
    for _ in range(3):
        fill(portfolio, pos, 1, 0.1, 100.0)
    fill(portfolio, pos, -1, 0.3, 100.0)
    assert pos.qty == 0.0


def test_win_rate_counts_round_trips(book):
    portfolio, pos = book
    assert math.isnan(portfolio.win_rate)
    for exit_price in (101.0, 99.0, 102.0, 103.0):
        fill(portfolio, pos, 1, 1.0, 100.0)
        fill(portfolio, pos, -1, 1.0, exit_price)
    assert portfolio.win_rate == pytest.approx(2 / 3)  # the window holds the last three


def test_drawdown_and_the_day(book):
    portfolio, pos = book
    portfolio.roll_day(3 * NS_PER_DAY + 5)
    assert portfolio.next_day_ns == 4 * NS_PER_DAY
    fill(portfolio, pos, 1, 10.0, 100.0)
    portfolio.mark(pos, 110.0)
    portfolio.mark(pos, 105.0)
    assert portfolio.peak_usdt == pytest.approx(10_100.0)
    assert portfolio.drawdown == pytest.approx(50 / 10_100)
    assert portfolio.daily_loss == pytest.approx(-50 / 10_000)
