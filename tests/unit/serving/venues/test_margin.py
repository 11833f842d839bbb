"""Binance USD-M isolated liquidation prices, by hand, with the default BTCUSDT brackets.

LP = (WB + cum - side x Q x EP) / (Q x mmr - side x Q), i.e.
    long:  (Q x EP - WB - cum) / (Q x (1 - mmr))
    short: (Q x EP + WB + cum) / (Q x (1 + mmr))
with the tier of the notional at LP."""

import pytest
from pydantic import ValidationError

from serving.venues.config import BTCUSDT_TIERS, MarginConfig, MarginTier
from serving.venues.margin import liquidation_price, maintenance_margin, max_notional, tier_of

T = BTCUSDT_TIERS


def test_tier_1_long_and_short():
    # 0.5 BTC at 60,000 = 30,000 notional, 20x: WB = 1,500. Tier 1 (< 50,000): mmr 0.4 %, cum 0.
    # long:  (30,000 - 1,500 - 0) / (0.5 x 0.996) = 28,500 / 0.498 = 57,228.9157 (notional 28,614: tier 1)
    assert liquidation_price(T, 1, 0.5, 60_000.0, 1_500.0) == pytest.approx(57_228.9157, abs=1e-3)
    # short: (30,000 + 1,500 + 0) / (0.5 x 1.004) = 31,500 / 0.502 = 62,749.0040 (notional 31,375: tier 1)
    assert liquidation_price(T, -1, 0.5, 60_000.0, 1_500.0) == pytest.approx(62_749.0040, abs=1e-3)


def test_tier_2_long():
    # 5 BTC at 60,000 = 300,000, 50x: WB = 6,000. Tier 2 (50,000 to 600,000): mmr 0.5 %, cum 50.
    # (300,000 - 6,000 - 50) / (5 x 0.995) = 293,950 / 4.975 = 59,085.4271 (notional 295,427: tier 2)
    assert liquidation_price(T, 1, 5.0, 60_000.0, 6_000.0) == pytest.approx(59_085.4271, abs=1e-3)


def test_tier_3_short():
    # 12 BTC at 60,000 = 720,000, 25x: WB = 28,800. Tier 3 (600,000 to 3,000,000): mmr 0.65 %, cum 950.
    # (720,000 + 28,800 + 950) / (12 x 1.0065) = 749,750 / 12.078 = 62,075.6748 (notional 744,908: tier 3)
    assert liquidation_price(T, -1, 12.0, 60_000.0, 28_800.0) == pytest.approx(62_075.6748, abs=1e-3)


def test_the_tier_is_the_one_at_the_liquidation_price():
    # 10.1 BTC at 60,000 = 606,000: tier 3 at the entry. 10x: WB = 60,600.
    # tier 3: (606,000 - 60,600 - 950) / (10.1 x 0.9935) = 54,258.6 -> notional 548,012: not tier 3;
    # tier 2: (606,000 - 60,600 - 50) / (10.1 x 0.995) = 545,350 / 10.0495 = 54,266.3814 -> 548,090: tier 2.
    assert liquidation_price(T, 1, 10.1, 60_000.0, 60_600.0) == pytest.approx(54_266.3814, abs=1e-3)


def test_at_the_liquidation_price_margin_plus_pnl_is_the_maintenance_margin():
    for side, qty, margin in ((1, 0.5, 1_500.0), (1, 10.1, 60_600.0), (-1, 12.0, 28_800.0), (-1, 400.0, 600_000.0)):
        price = liquidation_price(T, side, qty, 60_000.0, margin)
        assert margin + side * qty * (price - 60_000.0) == pytest.approx(maintenance_margin(T, qty * price))


def test_a_long_at_1x_cannot_be_liquidated():
    assert liquidation_price(T, 1, 1.0, 60_000.0, 60_000.0) == 0.0


def test_the_maintenance_margin_is_continuous_across_tiers():
    for tier in T[1:]:
        below = maintenance_margin(T, tier.floor_usdt - 1e-6)
        assert maintenance_margin(T, tier.floor_usdt) == pytest.approx(below, abs=1e-4)
    assert tier_of(T, 49_999.0).maint_margin_rate == 0.004 and tier_of(T, 50_000.0).maint_margin_rate == 0.005


def test_the_notional_a_leverage_allows():
    assert max_notional(T, 125) == 50_000
    assert max_notional(T, 100) == 600_000
    assert max_notional(T, 20) == 100_000_000
    assert max_notional(T, 1) == float("inf")


def test_a_bracket_table_with_a_wrong_maintenance_amount_is_refused():
    good = (MarginTier(floor_usdt=0, max_leverage=50, maint_margin_rate=0.01, maint_amount_usdt=0),
            MarginTier(floor_usdt=10_000, max_leverage=20, maint_margin_rate=0.025, maint_amount_usdt=150))  # fmt: skip
    assert MarginConfig(tiers=good).tiers == good
    bad = (good[0], good[1].model_copy(update={"maint_amount_usdt": 100}))
    with pytest.raises(ValidationError, match="should be 150"):
        MarginConfig(tiers=bad)
    falling = (good[0], good[1].model_copy(update={"max_leverage": 75, "maint_amount_usdt": 150}))
    with pytest.raises(ValidationError, match="X: tiers must rise"):
        MarginConfig(tiers_by_symbol={"X": falling})


def test_the_venue_posts_margin_at_its_leverage_and_uses_binances_price(sim):
    s = sim()
    s.quote(99.99, 100.00, ask_qty=50.0)
    s.send(s.order(1, qty=10.0), leverage=20.0)
    p = s.venue.position(sim.SYMBOL)
    # 1,000 notional at 20x: 50 posted. (1,000 - 50) / (10 x 0.996) = 95.3815
    assert (p.qty, p.entry_px, p.margin_usdt, p.leverage) == (10.0, 100.00, pytest.approx(50.0), 20.0)
    assert p.liquidation_px == pytest.approx(95.38153, abs=1e-4)
    assert s.venue.available_usdt == pytest.approx(10_000 - 0.5 - 50.0)  # less the taker fee and margin


def test_leverage_and_margin_limits_refuse_orders(sim):
    s = sim(balance=1_000.0)
    s.quote(99.99, 100.00, ask_qty=1_000.0)
    assert s.venue.set_leverage(sim.SYMBOL, 500.0) == 125.0  # the first tier's maximum
    assert s.venue.set_leverage(sim.SYMBOL, 0.5) == 1.0  # Binance's minimum
    s.venue.set_leverage(sim.SYMBOL, 10.0)
    assert [e.reason for e in s.send(s.order(1, qty=101.0))] == ["rejected"]  # 1,010 margin > 1,000
    assert [type(e).__name__ for e in s.send(s.order(1, qty=99.0))] == ["Fill"]
    s.venue.set_leverage(sim.SYMBOL, 125.0)
    # 99 + 600 at 100 = 69,900 notional > the 50,000 that 125x allows
    assert [e.reason for e in s.send(s.order(1, qty=600.0))] == ["rejected"]
