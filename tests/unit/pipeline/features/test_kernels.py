"""Indicator kernels against values computed by hand on scripted paths (through the online engine,
which runs the same compiled step as batch extraction)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pipeline.features.core import (
    BID,
    KIND_QUOTE,
    KIND_TRADE,
    OFI_E,
    RET,
    new_core,
    update_core,
)
from pipeline.features.engine import FeatureEngine

SECOND = 1_000_000_000


def feed_mids(names, mids, spread=0.1, size=1.0):
    """One quote per mid (bid = mid - spread / 2), 1 s apart; the engine after the last."""
    engine = FeatureEngine(names)
    for i, mid in enumerate(mids):
        engine.on_quote(i * SECOND, mid - spread / 2, size, mid + spread / 2, size)
    return engine


def value(engine, name):
    return float(engine.values[engine.names.index(name)])


def test_ret_tick_is_the_log_return_over_the_last_w_quote_updates():
    mids = [100.0, 101.0, 99.0, 102.0, 103.0, 98.0, 100.5]
    engine = feed_mids(("ret_tick_5",), mids)
    # A ring of w + 1 = 6 log mids: after 7 quotes it holds mids[1:], the oldest is 101.
    assert value(engine, "ret_tick_5") == pytest.approx(math.log(100.5) - math.log(101.0), rel=1e-12)


def test_ret_tick_while_the_ring_fills_is_the_return_since_the_first_quote():
    engine = feed_mids(("ret_tick_5",), [100.0, 101.0, 102.0])
    assert value(engine, "ret_tick_5") == pytest.approx(math.log(102.0 / 100.0), rel=1e-12)


def test_rsi_with_wilder_smoothing_on_a_scripted_path():
    mids = [100.0, 101.0, 100.5, 102.0]
    r = [math.log(b / a) for a, b in itertools.pairwise(mids)]  # up, down, up
    a = 1.0 / 5.0  # Wilder: 1 / w
    up, down = r[0], 0.0  # the first return initialises both averages
    up, down = up + a * (0.0 - up), down + a * (-r[1] - down)
    up, down = up + a * (r[2] - up), down + a * (0.0 - down)
    engine = feed_mids(("rsi_tick_5",), mids)
    assert value(engine, "rsi_tick_5") == pytest.approx((up - down) / (up + down), rel=1e-12)


def test_rsi_is_plus_one_when_the_mid_only_rises():
    engine = feed_mids(("rsi_tick_5",), [100.0 + i for i in range(10)])
    assert value(engine, "rsi_tick_5") == 1.0


@pytest.mark.parametrize(
    ("before", "after", "increment"),
    [
        # (bid, bid_qty, ask, ask_qty): Cont, Kukanov & Stoikov's e_n.
        ((100.0, 5.0, 101.0, 7.0), (100.0, 8.0, 101.0, 7.0), 8.0 - 5.0),  # bid size grows
        ((100.0, 5.0, 101.0, 7.0), (100.5, 2.0, 101.0, 7.0), 2.0),  # bid improves: new bid queue
        ((100.0, 5.0, 101.0, 7.0), (99.5, 3.0, 101.0, 7.0), -5.0),  # bid drops: old bid queue gone
        ((100.0, 5.0, 101.0, 7.0), (100.0, 5.0, 100.5, 4.0), -4.0),  # ask improves: selling pressure
        ((100.0, 5.0, 101.0, 7.0), (100.0, 5.0, 101.5, 9.0), 7.0),  # ask lifted: old ask queue gone
        ((100.0, 5.0, 101.0, 7.0), (100.0, 5.0, 101.0, 3.0), 7.0 - 3.0),  # ask size shrinks
    ],
)
def test_order_flow_imbalance_increments(before, after, increment):
    core, clock = new_core()
    assert update_core(core, clock, 1, KIND_QUOTE, np.nan, np.nan, 0.0, *before)
    assert core[OFI_E] == 0.0  # no previous book: no increment
    assert update_core(core, clock, 2, KIND_QUOTE, np.nan, np.nan, 0.0, *after)
    assert core[OFI_E] == pytest.approx(increment)
    assert core[RET] == pytest.approx(math.log((after[0] + after[2]) / (before[0] + before[2])))


def test_ofi_tick_is_mean_increment_over_mean_depth():
    engine = FeatureEngine(("ofi_tick_5",))
    engine.on_quote(0, 100.0, 5.0, 101.0, 7.0)
    engine.on_quote(SECOND, 100.0, 8.0, 101.0, 7.0)  # e = +3, depth (8 + 7) / 2
    assert value(engine, "ofi_tick_5") == pytest.approx(3.0 / 7.5)
    engine.on_quote(2 * SECOND, 100.0, 8.0, 101.0, 9.0)  # e = -2, depth 8.5
    a = 2.0 / 6.0
    assert value(engine, "ofi_tick_5") == pytest.approx((3.0 + a * (-2.0 - 3.0)) / (7.5 + a * (8.5 - 7.5)))


def test_parkinson_range_over_the_last_w_quotes():
    mids = [100.0, 104.0, 101.0, 99.0, 102.0, 103.0, 100.0, 101.5]
    engine = feed_mids(("park_tick_5",), mids)
    window = mids[-5:]  # 99 has left the window; high 103, low 100
    expected = abs(math.log(max(window)) - math.log(min(window))) / math.sqrt(4.0 * math.log(2.0))
    assert value(engine, "park_tick_5") == pytest.approx(expected, rel=1e-12)


def test_parkinson_range_is_zero_on_a_flat_mid():
    assert value(feed_mids(("park_tick_5",), [100.0] * 8), "park_tick_5") == 0.0


def test_efficiency_ratio_is_one_on_a_straight_line_and_zero_on_a_zigzag():
    straight = feed_mids(("effratio_tick_10",), [100.0 + 0.5 * i for i in range(30)])
    assert value(straight, "effratio_tick_10") == pytest.approx(1.0, rel=1e-12)
    zigzag = feed_mids(("effratio_tick_10",), [100.0 + (i % 2) for i in range(30)])
    assert value(zigzag, "effratio_tick_10") == 0.0  # 10 moves of one tick, back where it was


def test_bollinger_z_and_width_of_a_flat_mid_are_zero():
    engine = feed_mids(("bbz_tick_5", "bbw_tick_5"), [100.0, 101.0] + [100.0] * 400)
    assert value(engine, "bbz_tick_5") == 0.0  # rounding residue is not a deviation
    assert value(engine, "bbw_tick_5") < 1e-12


def test_bollinger_width_is_four_ew_deviations():
    mids = [100.0, 101.0, 100.0, 102.0]
    x = [math.log(m) for m in mids]
    a = 2.0 / 6.0
    mean, m2 = x[0], x[0] ** 2
    for v in x[1:]:
        mean, m2 = mean + a * (v - mean), m2 + a * (v * v - m2)
    engine = feed_mids(("bbw_tick_5", "bbz_tick_5"), mids)
    assert value(engine, "bbw_tick_5") == pytest.approx(4.0 * math.sqrt(m2 - mean * mean), rel=1e-6)
    assert value(engine, "bbz_tick_5") == pytest.approx((x[-1] - mean) / math.sqrt(m2 - mean * mean), rel=1e-6)


def test_trade_sign_and_signed_volume_imbalance():
    engine = FeatureEngine(("tsi_tick_5", "sv_tick_5"))
    engine.on_trade(0, 100.0, 1.0, 1.0)
    engine.on_trade(1, 100.0, 3.0, -1.0)
    a = 2.0 / 6.0
    assert value(engine, "tsi_tick_5") == pytest.approx(1.0 + a * (-1.0 - 1.0))
    assert value(engine, "sv_tick_5") == pytest.approx((1.0 + a * (-3.0 - 1.0)) / (1.0 + a * (3.0 - 1.0)))


def test_vwap_deviation_of_the_mid_from_trades_at_one_price():
    engine = FeatureEngine(("vwapdev_tick_5",))
    engine.on_quote(0, 100.9, 1.0, 101.1, 1.0)
    engine.on_trade(1, 100.0, 2.0, 1.0)
    engine.on_trade(2, 100.0, 5.0, -1.0)
    assert value(engine, "vwapdev_tick_5") == pytest.approx(101.0 / 100.0 - 1.0, rel=1e-12)


def test_trade_rate_counts_trades_per_second_with_a_time_decay():
    engine = FeatureEngine(("traderate_time_1s",))
    engine.on_trade(0, 100.0, 1.0, 1.0)
    engine.on_trade(SECOND // 2, 100.0, 1.0, 1.0)
    assert value(engine, "traderate_time_1s") == pytest.approx(math.exp(-0.5) + 1.0)


def test_book_level_features():
    engine = FeatureEngine(("spreadrel_l1", "bookimb_l1", "microdev_l1"))
    engine.on_quote(0, 99.0, 3.0, 101.0, 1.0)
    assert value(engine, "spreadrel_l1") == pytest.approx(2.0 / 100.0)
    assert value(engine, "bookimb_l1") == pytest.approx((3.0 - 1.0) / 4.0)
    micro = (99.0 * 1.0 + 101.0 * 3.0) / 4.0  # each side weighted by the other's size
    assert value(engine, "microdev_l1") == pytest.approx(micro / 100.0 - 1.0)


def test_core_keeps_the_book_of_the_last_valid_quote():
    core, clock = new_core()
    update_core(core, clock, 1, KIND_QUOTE, np.nan, np.nan, 0.0, 100.0, 1.0, 101.0, 1.0)
    update_core(core, clock, 2, KIND_TRADE, 100.5, 1.0, 1.0, np.nan, np.nan, np.nan, np.nan)
    assert core[BID] == 100.0 and core[RET] == 0.0
