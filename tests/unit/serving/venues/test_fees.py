import pytest

from serving.events import Fill
from serving.venues.config import FeeConfig


def test_a_passive_fill_pays_the_maker_fee(sim):
    s = sim()
    s.quote(99.99, 100.02)
    assert s.send(s.limit(1, 100.00, 2.0)) == []  # improves the bid: rests, nobody ahead
    [fill] = s.trade(100.00, 5.0, -1)
    assert fill == Fill(sim.SYMBOL, s.now, "o1", 100.00, 2.0, 1, pytest.approx(200.0 * 0.0002))
    assert s.venue.wallet_usdt == pytest.approx(10_000 - 0.04)
    account = s.venue.account()
    assert account.maker_fees_usdt == pytest.approx(0.04) and account.taker_fees_usdt == 0.0


def test_a_market_order_pays_the_taker_fee(sim):
    s = sim()
    s.quote(99.99, 100.01, ask_qty=3.0)
    [fill] = s.send(s.order(1, qty=2.0))
    assert (fill.price, fill.qty) == (100.01, 2.0)
    assert fill.fee_usdt == pytest.approx(200.02 * 0.0005)
    assert s.venue.account().taker_fees_usdt == pytest.approx(0.10001)
    assert s.venue.wallet_usdt == pytest.approx(10_000 - 0.10001)


def test_a_negative_maker_rate_is_a_rebate(sim):
    s = sim(sim.config(fees=FeeConfig(maker_rate=-0.0001, taker_rate=0.0004)))
    s.quote(99.99, 100.02)
    s.send(s.limit(-1, 100.01, 1.0))
    [fill] = s.trade(100.01, 1.0, 1)
    assert fill.fee_usdt == pytest.approx(-0.010001)
    assert s.venue.wallet_usdt == pytest.approx(10_000 + 0.010001)
    assert s.venue.account().maker_fees_usdt == pytest.approx(-0.010001)


def test_realised_pnl_and_fees_make_the_wallet(sim):
    s = sim()
    s.quote(99.99, 100.00, ask_qty=5.0)
    s.send(s.order(1, qty=1.0))  # taker 100.00
    s.quote(100.99, 101.00, bid_qty=5.0)
    s.send(s.order(-1, qty=1.0, reduce_only=True))  # taker 100.99
    account = s.venue.account()
    assert account.realised_usdt == pytest.approx(0.99)
    assert account.wallet_usdt == pytest.approx(10_000 + 0.99 - (100.00 + 100.99) * 0.0005)
    assert account.equity_usdt == account.wallet_usdt and s.position == 0.0
    assert account.fills == 2 and account.volume_usdt == pytest.approx(200.99)
