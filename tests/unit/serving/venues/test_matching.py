"""Queue position, partial fills, order rules and slippage (the rules: serving/venues/matching.py)."""

import pytest

from serving.events import Depth, OrderDone
from serving.venues.config import ImpactConfig, QueueConfig


def fills(events):
    return [(e.price, e.qty) for e in events if type(e).__name__ == "Fill"]


def done(events):
    return [(e.client_id, e.reason) for e in events if type(e) is OrderDone]


# ---- queue position and partial fills -------------------------------------------------------------


def test_a_passive_order_fills_only_after_the_queue_ahead_trades(sim):
    s = sim()
    s.quote(100.00, 100.02, bid_qty=3.0)
    s.send(s.limit(1, 100.00, 1.0))  # joins the touch: 3.0 ahead
    assert s.resting("o1").queue_ahead == 3.0
    assert s.trade(100.00, 2.0, -1) == []  # 1.0 still ahead
    assert s.resting("o1").queue_ahead == 1.0
    assert fills(s.trade(100.00, 1.5, -1)) == [(100.00, 0.5)]  # a partial fill: 0.5 past the queue
    assert s.resting("o1").remaining == 0.5 and s.position == 0.5
    assert fills(s.trade(100.00, 2.0, -1)) == [(100.00, 0.5)]
    assert s.venue.working() == [] and s.position == 1.0


def test_buyers_at_our_bid_do_not_move_the_queue(sim):
    s = sim()
    s.quote(100.00, 100.02, bid_qty=3.0)
    s.send(s.limit(1, 100.00))
    assert s.trade(100.00, 5.0, 1) == [] and s.resting("o1").queue_ahead == 3.0


def test_the_displayed_size_shrinking_caps_the_queue(sim):
    s = sim()
    s.quote(100.00, 100.02, bid_qty=3.0)
    s.send(s.limit(1, 100.00))
    s.quote(100.00, 100.02, bid_qty=0.4)  # orders ahead were cancelled
    assert s.resting("o1").queue_ahead == 0.4
    s.quote(100.00, 100.02, bid_qty=2.0)  # new ones join behind us
    assert s.resting("o1").queue_ahead == 0.4
    assert fills(s.trade(100.00, 1.0, -1)) == [(100.00, 0.6)]


def test_a_trade_through_the_price_fills_everything(sim):
    s = sim()
    s.quote(100.00, 100.02, bid_qty=3.0)
    s.send(s.limit(1, 100.00, 2.0))
    assert fills(s.trade(99.99, 0.001, -1)) == [(100.00, 2.0)]  # everyone at 100.00 is gone


def test_the_other_side_reaching_the_price_fills_everything(sim):
    s = sim()
    s.quote(100.00, 100.02, ask_qty=3.0)
    s.send(s.limit(-1, 100.02, 2.0))
    assert s.quote(100.00, 100.01) == []  # an ask below ours: we sit behind, unfilled
    assert fills(s.quote(100.02, 100.03)) == [(100.02, 2.0)]  # the bid reached our ask


def test_the_best_price_moving_behind_the_order_leaves_nobody_ahead(sim):
    s = sim()
    s.quote(100.00, 100.02, bid_qty=3.0)
    s.send(s.limit(1, 100.00))
    s.quote(99.99, 100.01)  # the bid at 100.00 is gone: we are the best bid alone
    assert s.resting("o1").queue_ahead == 0.0


def test_behind_the_touch_the_queue_is_the_touch_size_or_the_depth(sim):
    s = sim(sim.config(queue=QueueConfig(behind_touch_fraction=0.5)))
    s.quote(100.00, 100.02, bid_qty=4.0)
    s.send(s.limit(1, 99.98))
    assert s.resting("o1").queue_ahead == 2.0  # no depth: half the touch, as configured
    s.venue.on_depth(Depth(sim.SYMBOL, s.now, ((100.00, 4.0), (99.99, 1.0), (99.98, 0.7)), ()))
    assert s.resting("o1").queue_ahead == 0.7  # the depth tells the level's size
    s.send(s.limit(1, 99.97))
    assert s.resting("o2").queue_ahead == 2.0  # beyond the depth shown: unknown
    s.venue.on_depth(Depth(sim.SYMBOL, s.now, ((100.00, 4.0), (99.99, 1.0), (99.96, 0.2)), ()))
    assert s.resting("o2").queue_ahead == 0.0  # inside the depth shown, no level: empty
    s.send(s.limit(1, 99.99))
    assert s.resting("o3").queue_ahead == 1.0  # known on arrival


def test_an_order_improving_the_best_price_has_nobody_ahead(sim):
    s = sim()
    s.quote(100.00, 100.03, bid_qty=3.0)
    s.send(s.limit(1, 100.01, 2.0))
    assert s.resting("o1").queue_ahead == 0.0
    assert fills(s.trade(100.01, 0.5, -1)) == [(100.01, 0.5)]


# ---- order rules ------------------------------------------------------------------------------


def test_a_post_only_order_that_would_cross_is_rejected(sim):
    s = sim()
    s.quote(100.00, 100.02)
    assert done(s.send(s.limit(1, 100.02))) == [("o1", "rejected")]
    assert done(s.send(s.limit(-1, 100.00))) == [("o2", "rejected")]
    assert s.venue.working() == [] and s.position == 0.0


def test_a_limit_without_post_only_takes_up_to_its_price_and_rests_the_rest(sim):
    s = sim(sim.config(impact=ImpactConfig(level_spacing_ticks=1, level_size_fraction=1.0)))
    s.quote(100.00, 100.02, ask_qty=1.0)
    events = s.send(s.limit(1, 100.03, 3.0, post_only=False))
    assert fills(events) == [(100.02, 1.0), (100.03, 1.0)]  # the touch, one synthetic level
    assert [o.client_id for o in s.venue.working()] == ["o1"] and s.resting("o1").remaining == 1.0


def test_reduce_only_is_rejected_without_a_position_to_reduce(sim):
    s = sim()
    s.quote(100.00, 100.01, ask_qty=5.0)
    assert done(s.send(s.order(-1, reduce_only=True))) == [("o1", "rejected")]
    s.send(s.order(1, qty=1.0))
    assert done(s.send(s.order(1, reduce_only=True))) == [("o3", "rejected")]  # would add to the long
    assert s.position == 1.0


def test_reduce_only_is_cut_to_the_position_and_never_flips_it(sim):
    s = sim()
    s.quote(100.00, 100.01, bid_qty=5.0, ask_qty=5.0)
    s.send(s.order(1, qty=1.0))
    events = s.send(s.order(-1, qty=3.0, reduce_only=True))
    assert fills(events) == [(100.00, 1.0)] and done(events) == [("o2", "expired")]
    assert s.position == 0.0


def test_a_resting_reduce_only_order_is_cut_when_it_fills(sim):
    s = sim()
    s.quote(100.00, 100.01, ask_qty=5.0)
    s.send(s.order(1, qty=1.0))
    s.send(s.limit(-1, 100.03, 2.0, reduce_only=True))
    events = s.trade(100.04, 1.0, 1)
    assert fills(events) == [(100.03, 1.0)] and done(events) == [("o2", "expired")]
    assert s.position == 0.0


# ---- stops and slippage -------------------------------------------------------------------------


def test_a_stop_that_would_trigger_at_once_is_rejected(sim):
    s = sim()
    s.quote(100.00, 100.01, ask_qty=5.0)
    s.send(s.order(1, qty=1.0))
    assert done(s.send(s.stop(-1, 100.00))) == [("o2", "rejected")]  # the bid is at the trigger
    assert done(s.send(s.stop(-1, 99.90))) == []


def test_a_stop_triggers_and_walks_the_book(sim):
    # Synthetic levels every tick, each the touch's size: hand-computable.
    s = sim(sim.config(impact=ImpactConfig(level_spacing_ticks=1, level_size_fraction=1.0)))
    s.quote(100.00, 100.01, ask_qty=5.0)
    s.send(s.order(1, qty=1.0))
    s.send(s.stop(-1, 99.50, 1.0))
    assert s.quote(99.60, 99.61) == []
    events = s.quote(99.50, 99.52, bid_qty=0.4)
    # 0.4 at the touch 99.50; 0.6 beyond it: 0.4 at 99.49 and 0.2 at 99.48, a mean of 99.4867,
    # booked as one fill on the grid, against us: 99.48.
    assert fills(events) == [(99.50, 0.4), (99.48, 0.6)]
    assert [e.fee_usdt for e in events] == pytest.approx([99.50 * 0.4 * 0.0005, 99.48 * 0.6 * 0.0005])
    assert s.position == 0.0 and s.venue.working() == []


def test_a_stop_triggers_on_a_trade_too(sim):
    s = sim()
    s.quote(100.00, 100.01, bid_qty=5.0, ask_qty=5.0)
    s.send(s.order(-1, qty=1.0))
    s.send(s.stop(1, 100.05, 1.0))
    assert s.trade(100.04, 1.0, 1) == []
    assert fills(s.trade(100.05, 1.0, 1)) == [(100.01, 1.0)]  # the book's ask, as quoted
    assert s.position == 0.0


def test_a_market_order_walks_the_depth_when_given(sim):
    s = sim()
    s.quote(100.00, 100.01, ask_qty=0.5)
    s.venue.on_depth(Depth(sim.SYMBOL, s.now, (), ((100.01, 9.0), (100.02, 0.3), (100.05, 1.0))))
    events = s.send(s.order(1, qty=1.5))
    # the quoted touch size, not the depth's older one; then the levels beyond it
    assert fills(events) == [(100.01, 0.5), (100.02, 0.3), (100.05, 0.7)]


def test_a_market_order_never_goes_beyond_the_slippage_cap(sim):
    s = sim(sim.config(impact=ImpactConfig(level_spacing_ticks=1, level_size_fraction=1.0, max_slippage_bps=3)))
    s.quote(99.99, 100.00, ask_qty=1.0)
    events = s.send(s.order(1, qty=10.0))
    # 100.00 + 3 bps = 100.03: the touch and three synthetic levels fill, the rest expires
    assert fills(events) == [(100.00, 1.0), (100.02, 3.0)] and done(events) == [("o1", "expired")]


def test_a_second_order_does_not_take_the_same_displayed_size_again(sim):
    s = sim(sim.config(impact=ImpactConfig(level_spacing_ticks=1, level_size_fraction=1.0)))
    s.quote(99.99, 100.00, ask_qty=1.0)
    assert fills(s.send(s.order(1, qty=0.6))) == [(100.00, 0.6)]
    assert fills(s.send(s.order(1, qty=0.6))) == [(100.00, 0.4), (100.01, 0.2)]
    s.quote(99.99, 100.00, ask_qty=1.0)  # a new quote: the book refilled
    assert fills(s.send(s.order(1, qty=0.6))) == [(100.00, 0.6)]


def test_a_cancel_confirms_and_an_unknown_cancel_is_silent(sim):
    s = sim()
    s.quote(100.00, 100.02)
    s.send(s.limit(1, 99.99))
    assert done(s.send(cancels=("o1",))) == [("o1", "cancelled")]
    assert s.send(cancels=("o1",)) == [] and s.venue.working() == []
