"""Fee-aware triple-barrier labels: barriers, costs, horizons, and the future-only boundary."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.config import LabelConfig
from pipeline.features.core import KIND_QUOTE, KIND_TRADE
from pipeline.features.events import EventArrays
from pipeline.labels import horizon_complete, mid_path, triple_barrier

HALF_SPREAD = 0.05  # quotes 0.1 wide around each mid
NO_COSTS = dict(fee_bps_per_side=0.0, include_half_spread=False)


def quotes(mids, seconds=None, half_spread=HALF_SPREAD) -> EventArrays:
    mids = np.asarray(mids, dtype=float)
    n = len(mids)
    ts = (np.arange(n) if seconds is None else np.asarray(seconds, dtype=float)) * 1e9
    nan = np.full(n, np.nan)
    return EventArrays(
        ts.astype(np.int64), np.full(n, KIND_QUOTE, np.int64), nan, nan, np.zeros(n),
        mids - half_spread, np.ones(n), mids + half_spread, np.ones(n),
    )


def config(**overrides) -> LabelConfig:
    values = dict(tp_bps=10.0, sl_bps=10.0, horizon_events=5, horizon_seconds=None, **NO_COSTS)
    return LabelConfig(**{**values, **overrides})


def one(events: EventArrays, i: int, cfg: LabelConfig, **kw):
    labels = triple_barrier(events, np.array([i]), cfg, **kw)
    return int(labels.label[0]), int(labels.exit_index[0]), float(labels.fwd_return[0]), bool(labels.complete[0])


def test_upper_barrier_first_is_plus_one_with_the_return_at_exit():
    events = quotes([100, 100.05, 100.11, 99.0, 100, 100, 100])
    assert one(events, 0, config()) == (1, 2, pytest.approx(0.0011), True)


def test_lower_barrier_first_is_minus_one():
    events = quotes([100, 99.95, 99.89, 101, 100, 100, 100])
    assert one(events, 0, config())[:2] == (-1, 2)


def test_time_barrier_is_zero_and_exits_at_the_horizon():
    events = quotes([100, 100.05, 99.95, 100.02, 100.0, 100.03, 105.0])
    label, exit_index, ret, complete = one(events, 0, config())
    assert (label, exit_index, complete) == (0, 5, True)
    assert ret == pytest.approx(0.0003)


def test_costs_widen_both_barriers():
    # +12 bps clears a 10 bps take-profit alone, but not 10 bps plus 2 x 4 bps fees.
    events = quotes([100, 100.12, 100, 100, 100, 100, 100])
    assert one(events, 0, config())[0] == 1
    assert one(events, 0, config(fee_bps_per_side=4.0))[0] == 0
    events = quotes([100, 100.19, 100, 100, 100, 100, 100])
    assert one(events, 0, config(fee_bps_per_side=4.0))[0] == 1
    events = quotes([100, 99.85, 100, 100, 100, 100, 100])
    assert one(events, 0, config(fee_bps_per_side=4.0))[0] == 0


def test_half_the_entry_spread_is_a_cost():
    # A 0.1 half spread at 100 is 10 bps: +15 bps clears tp alone, not tp plus the half spread.
    events = quotes([100, 100.15, 100, 100, 100, 100, 100], half_spread=0.1)
    assert one(events, 0, config())[0] == 1
    assert one(events, 0, config(include_half_spread=True))[0] == 0


def test_seconds_horizon_ends_at_the_last_event_within_it():
    events = quotes([100, 100, 100, 100, 101], seconds=[0, 1, 2, 2.5, 3.5])
    cfg = config(horizon_events=None, horizon_seconds=3.0)
    assert one(events, 0, cfg)[:2] == (0, 3)  # the jump at 3.5 s is past the barrier
    assert one(events, 1, cfg)[3] is False  # 1 s + 3 s lies past the last event
    assert one(events, 1, cfg, known_until_ns=int(4e9))[:2] == (1, 4)


def test_a_horizon_beyond_the_data_is_incomplete_unless_the_stream_is_known_to_go_on():
    events = quotes([100, 101, 100, 100], seconds=[0, 1, 2, 3])
    cfg = config(horizon_events=None, horizon_seconds=2.5)
    labels = triple_barrier(events, np.arange(4), cfg)
    assert labels.complete.tolist() == [True, False, False, False]
    assert labels.label.tolist() == [1, 0, 0, 0]  # an incomplete row is never +/-1, even if it touched
    assert np.isnan(labels.fwd_return[1:]).all()
    assert horizon_complete(events, np.arange(4), cfg, known_until_ns=int(4.5e9)).tolist() == [1, 1, 1, 0]
    assert triple_barrier(quotes([100, 100, 100]), np.arange(3), config(horizon_events=2)).complete.tolist() == [
        True, False, False,
    ]


def test_trades_and_invalid_quotes_do_not_move_the_mid():
    events = quotes([100, 100, 100, 100, 100, 100, 100])
    kind = events.kind.copy()
    kind[1] = KIND_TRADE  # a trade at a silly price (its bid/ask columns are ignored)
    bid = events.bid.copy()
    bid[2] = 200.0  # crossed: ignored, as the feature core ignores it
    ask = events.ask.copy()
    ask[1] = 300.0
    events = EventArrays(events.ts_ns, kind, events.price, events.qty, events.side, bid, events.bid_qty, ask,
                         events.ask_qty)
    mid, _ = mid_path(events)
    assert mid.tolist() == [100.0] * 7
    assert one(events, 0, config())[0] == 0


def test_no_book_at_entry_is_incomplete():
    events = quotes([math.nan, 100, 100, 100, 100, 100, 100, 100])
    labels = triple_barrier(events, np.array([0, 1]), config())
    assert labels.complete.tolist() == [False, True]


def test_the_label_reads_only_the_future_up_to_its_horizon():
    rng = np.random.default_rng(3)
    base = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, 400)))
    cfg = config(horizon_events=20, tp_bps=15.0, sl_bps=15.0)
    at = np.arange(0, 350, 7)
    reference = triple_barrier(quotes(base), at, cfg)
    for i in at[:10]:
        # Anything after the time barrier (i + 20) may change: no label changes.
        changed = base.copy()
        changed[i + 21:] *= rng.uniform(0.9, 1.1, len(base) - i - 21)
        # Anything strictly before the entry may change too: only mid_i anchors the barriers.
        changed[:i] *= rng.uniform(0.9, 1.1, i)
        labels = triple_barrier(quotes(changed), np.array([i]), cfg)
        k = list(at).index(i)
        assert (labels.label[0], labels.exit_index[0]) == (reference.label[k], reference.exit_index[k])
        # The very next event is the label's: a jump there decides it.
        jumped = base.copy()
        jumped[i + 1] = base[i] * 1.01
        assert triple_barrier(quotes(jumped), np.array([i]), cfg).label[0] == 1
        jumped[i + 1] = base[i] * 0.99
        assert triple_barrier(quotes(jumped), np.array([i]), cfg).label[0] == -1


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.floats(-2e-3, 2e-3), min_size=2, max_size=60),
    horizon=st.integers(1, 12),
    tp=st.floats(1.0, 30.0),
    sl=st.floats(1.0, 30.0),
)
def test_matches_a_plain_python_scan(steps, horizon, tp, sl):
    mids = 100 * np.exp(np.cumsum([0.0, *steps]))
    cfg = config(horizon_events=horizon, tp_bps=tp, sl_bps=sl, fee_bps_per_side=2.0, include_half_spread=True)
    at = np.arange(len(mids))
    labels = triple_barrier(quotes(mids), at, cfg)
    for i in at:
        costs = 4e-4 + HALF_SPREAD / mids[i]
        up, down = mids[i] * (1 + tp * 1e-4 + costs), mids[i] * (1 - sl * 1e-4 - costs)
        expected, exit_index = 0, min(i + horizon, len(mids) - 1)
        for j in range(i + 1, exit_index + 1):
            if mids[j] >= up or mids[j] <= down:
                expected, exit_index = (1 if mids[j] >= up else -1), j
                break
        complete = i + horizon < len(mids)
        assert labels.complete[i] == complete
        if complete:
            assert (labels.label[i], labels.exit_index[i]) == (expected, exit_index)
            assert labels.fwd_return[i] == pytest.approx(mids[exit_index] / mids[i] - 1)


def test_label_config_needs_exactly_one_horizon():
    with pytest.raises(ValidationError, match="exactly one"):
        LabelConfig(horizon_events=10, horizon_seconds=60.0)
    with pytest.raises(ValidationError, match="exactly one"):
        LabelConfig(horizon_events=None, horizon_seconds=None)
    assert LabelConfig(horizon_events=100, horizon_seconds=None).horizon_events == 100
