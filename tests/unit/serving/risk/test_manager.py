import math

import pytest

from serving.events import LIMIT, MARKET, STOP, Order
from serving.risk.kill_switch import KillSwitch
from serving.risk.manager import RiskManager

MS = 1_000_000


def order(side=1, qty=1.0, price=100.0, type_=LIMIT, reduce_only=False, cid="a"):
    return Order(cid, "X", side, type_, price, qty, type_ == LIMIT, reduce_only, "t")


def check(rm, o, position=0.0, buy_open=0.0, sell_open=0.0, limit=10.0, leverage=5.0, equity=1_000.0,
          other=0.0, now=0):  # fmt: skip
    return rm.check(o, position, buy_open, sell_open, 100.0, limit, 5.0, leverage, equity, other, now)


@pytest.fixture()
def rm():
    return RiskManager(KillSwitch(0), max_notional_usdt=20_000, max_orders_per_s=3, portfolio_exposure_cap=8.0)


def test_a_sound_order_passes(rm):
    assert check(rm, order()) == ""


@pytest.mark.parametrize("qty, price", [(math.nan, 100.0), (1.0, math.nan), (math.inf, 100.0), (0.0, 100.0),
                                        (1.0, -1.0), (-1.0, 100.0)])  # fmt: skip
def test_no_nan_or_nonsense_passes(rm, qty, price):
    assert check(rm, order(qty=qty, price=price)).startswith("finite")


def test_market_orders_are_valued_at_the_reference_price(rm):
    # 5x of 1,000 USDT at 100: 50 coins
    assert check(rm, order(type_=MARKET, price=0.0, qty=49.0), limit=1e9) == ""
    assert check(rm, order(type_=MARKET, price=0.0, qty=51.0), limit=1e9).startswith("leverage_cap")


def test_worst_case_position_includes_working_orders(rm):
    assert check(rm, order(qty=4.0), position=3.0, buy_open=3.0) == ""  # exactly at the limit
    assert check(rm, order(qty=4.5), position=3.0, buy_open=3.0).startswith("position_limit")
    assert check(rm, order(qty=4.0), position=3.0, sell_open=3.0) == ""  # the sells could only reduce it
    assert check(rm, order(side=-1, qty=4.0), position=-3.0, sell_open=4.0).startswith("position_limit")


def test_notional_leverage_and_portfolio_caps(rm):
    assert check(rm, order(qty=1.0, price=30_000.0), limit=1e9, equity=1e9).startswith("notional_limit")
    assert check(rm, order(qty=6.0), leverage=0.5).startswith("leverage_cap")
    assert check(rm, order(qty=5.0), other=7_600.0).startswith("portfolio_cap")


def test_min_notional(rm):
    assert check(rm, order(qty=0.01)).startswith("min_notional")


def test_reduce_only_orders_must_reduce_and_skip_the_caps(rm):
    assert check(rm, order(side=-1, qty=2.0, reduce_only=True), position=2.0, limit=0.0, leverage=0.0) == ""
    assert check(rm, order(side=1, qty=1.0, reduce_only=True), position=2.0).startswith("reduce_only")
    assert check(rm, order(side=-1, qty=3.0, reduce_only=True), position=2.0).startswith("reduce_only")
    assert check(rm, order(side=-1, qty=1.0, reduce_only=True), position=0.0).startswith("reduce_only")


def test_rate_limit_spares_exits(rm):
    for i in range(3):
        o = order(cid=str(i))
        assert check(rm, o, now=i * MS) == ""
        rm.sent(o, i * MS)
    assert check(rm, order(), now=5 * MS).startswith("rate")
    assert check(rm, order(side=-1, type_=STOP, reduce_only=True), position=1.0, now=5 * MS) == ""
    assert check(rm, order(), now=1_001 * MS) == ""  # the first one has left the window


def test_kill_switch_states(rm):
    rm.kill.halt("test")
    rm.kill.evaluate(0, "", flat=False)  # REDUCING until flat
    assert check(rm, order()).startswith("kill_switch: reducing")
    assert check(rm, order(side=-1, qty=1.0, type_=MARKET, price=0.0, reduce_only=True), position=1.0) == ""
    rm.kill.evaluate(1, "", flat=True)  # HALTED
    assert check(rm, order(side=-1, qty=1.0, type_=MARKET, price=0.0, reduce_only=True),
                 position=1.0).startswith("kill_switch: halted")  # fmt: skip
