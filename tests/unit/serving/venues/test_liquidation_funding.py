"""Liquidation at Binance's price, with its fee and the whole isolated margin lost; funding both ways."""

import pytest

from serving.events import Fill, FundingPayment, Liquidation
from serving.markets import Market
from serving.portfolio import Portfolio
from serving.venues.config import FundingConfig, MarginConfig

HOUR = 3_600 * 1_000_000_000


def long_at_20x(sim, **config):
    """10 long at 100.00, 20x: 50 of margin; liquidation at (1,000 - 50) / (10 x 0.996) = 95.381526."""
    s = sim(sim.config(**config))
    s.quote(99.99, 100.00, ask_qty=50.0)
    events = s.send(s.order(1, qty=10.0), leverage=20.0)
    return s, events


def test_a_long_is_liquidated_at_its_price_losing_its_margin(sim):
    s, opened = long_at_20x(sim)
    s.send(s.stop(-1, 90.00, 10.0), s.limit(-1, 105.00, 10.0, reduce_only=True))
    assert s.quote(95.39, 95.40) == []  # mid 95.395: not yet
    events = s.quote(95.37, 95.38)  # mid 95.375: through 95.3815
    liq, fill, *cancelled = events
    price = 950 / 9.96
    left = 50 + 10 * (price - 100.00)  # 3.81526 = the maintenance margin, 953.815 x 0.4 %
    assert liq == Liquidation(sim.SYMBOL, s.now, -1, 10.0, pytest.approx(price), pytest.approx(left),
                              pytest.approx(50.0))  # fmt: skip
    # the clearance fee (1.25 % x 953.8 = 11.9) is capped by what is left of the margin
    assert fill == Fill(sim.SYMBOL, s.now, "liquidation-1", pytest.approx(price), 10.0, -1, pytest.approx(left))
    assert [(e.client_id, e.reason) for e in cancelled] == [("o3", "cancelled"), ("o2", "cancelled")]
    assert s.position == 0.0 and s.venue.working() == []
    account = s.venue.account()
    assert account.wallet_usdt == pytest.approx(10_000 - 0.5 - 50.0)  # the taker fee, the margin
    assert (account.liquidations, account.margin_lost_usdt) == (1, pytest.approx(50.0))
    assert account.liquidation_fees_usdt == pytest.approx(left)

    # The engine's books, fed the same fills, lose the same: PnL to the price, less the fee.
    portfolio = Portfolio([sim.SYMBOL], 10_000.0, 1)
    for f in [*opened, fill]:
        portfolio.apply_fill(portfolio.positions[sim.SYMBOL], Market(sim.LIMITS), f.side, f.qty, f.price, f.fee_usdt,
                             20.0, f.ts_ns, f.price)  # fmt: skip
    assert portfolio.cash_usdt == pytest.approx(s.venue.wallet_usdt)


def test_a_small_clearance_fee_still_loses_the_whole_margin(sim):
    s, _ = long_at_20x(sim, margin=MarginConfig(liquidation_fee_rate=0.001))
    [liq, fill] = s.quote(95.30, 95.32)
    assert liq.fee_usdt == pytest.approx(0.001 * 10 * 950 / 9.96)  # 0.954 < 3.815 left
    assert liq.margin_lost_usdt == pytest.approx(50.0)
    # the engine's fill carries all that was left (the fee and the insurance fund's share)
    assert fill.fee_usdt == pytest.approx(50 + 10 * (950 / 9.96 - 100.00))
    assert s.venue.wallet_usdt == pytest.approx(10_000 - 0.5 - 50.0)


def test_a_short_is_liquidated_on_a_mark_price(sim):
    s = sim()
    s.quote(99.99, 100.00, bid_qty=50.0)
    s.send(s.order(-1, qty=10.0), leverage=20.0)
    price = (999.9 + 49.995) / (10 * 1.004)  # 104.5712
    assert s.venue.position(sim.SYMBOL).liquidation_px == pytest.approx(price)
    assert s.venue.on_mark(sim.SYMBOL, s.now + 1, 104.50) == ()
    [liq, fill] = s.venue.on_mark(sim.SYMBOL, s.now + 2, 104.60)
    assert (liq.side, liq.qty, liq.price, fill.side) == (1, 10.0, pytest.approx(price), 1)
    assert s.position == 0.0


def test_funding_longs_pay_and_shorts_receive_when_the_rate_is_positive(sim):
    for side in (1, -1):
        s = sim()
        s.quote(99.99, 100.00, bid_qty=5.0, ask_qty=5.0)
        s.send(s.order(side, qty=2.0), leverage=10.0)
        before = s.venue.position(sim.SYMBOL)
        wallet = s.venue.wallet_usdt
        [payment] = s.venue.on_funding(sim.SYMBOL, s.now + 1, 0.0001, 101.0)
        paid = side * 2.0 * 101.0 * 0.0001  # 0.0202: the long pays it, the short receives it
        assert payment == FundingPayment(sim.SYMBOL, s.now + 1, 0.0001, 101.0, pytest.approx(paid))
        assert s.venue.wallet_usdt == pytest.approx(wallet - paid)
        after = s.venue.position(sim.SYMBOL)  # isolated: settled against the position's margin
        assert after.margin_usdt == pytest.approx(before.margin_usdt - paid)
        # the long's liquidation price rises towards the mid, the short's away from it
        assert after.liquidation_px > before.liquidation_px
        assert s.venue.account().funding_usdt == pytest.approx(paid)


def test_a_negative_rate_pays_the_longs(sim):
    s = sim()
    s.quote(99.99, 100.00, ask_qty=5.0)
    s.send(s.order(1, qty=2.0))
    [payment] = s.venue.on_funding(sim.SYMBOL, s.now + 1, -0.0003, 100.0)
    assert payment.amount_usdt == pytest.approx(-0.06)


def test_no_funding_without_a_position(sim):
    s = sim()
    s.quote(99.99, 100.00)
    assert s.venue.on_funding(sim.SYMBOL, s.now + 1, 0.0001, 100.0) == ()


def test_the_schedule_settles_at_00_08_16_utc_at_the_mid(sim):
    s = sim(sim.config(funding=FundingConfig(source="schedule", rate=0.0002)))
    s.quote(99.99, 100.00, ask_qty=5.0)
    s.send(s.order(1, qty=1.0))
    s.now = sim.T0 + 8 * HOUR - 5 * sim.MS
    assert s.quote(101.00, 101.02) == []  # 07:59:59.996
    [payment] = s.quote(102.00, 102.02, dt_ms=10)  # 08:00:00.006: the settlement came first
    assert payment == FundingPayment(sim.SYMBOL, sim.T0 + 8 * HOUR, 0.0002, pytest.approx(101.01),
                                     pytest.approx(101.01 * 0.0002))  # fmt: skip
    s.now = sim.T0 + 24 * HOUR
    events = s.quote(103.00, 103.02)  # 16:00 and 00:00 fall due
    assert [e.ts_ns for e in events] == [sim.T0 + 16 * HOUR, sim.T0 + 24 * HOUR]
