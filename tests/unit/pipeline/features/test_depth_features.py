"""Depth features (pipeline.features.kernels.depth) against values computed by hand, through the
online engine; depth updates as a side channel that leaves every other feature as it was; online
equals batch over a stream with sequence gaps; NaN and never warm where there is no depth."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import SyntheticSourceConfig
from pipeline.data.schemas import DEPTH, Kind
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.features.catalog import catalog, compile_program
from pipeline.features.check import quick_names
from pipeline.features.core import KIND_DEPTH, KIND_QUOTE, KIND_TRADE
from pipeline.features.engine import DEPTH as DEPTH_COUNTER
from pipeline.features.engine import FeatureEngine, extract, run_program, warm_mask
from pipeline.features.events import EventArrays, depth_updates, events_from_batches, merge_events
from pipeline.features.l2book import NO_ID, DepthUpdate

SNAPSHOT = DepthUpdate(0, 100, True, np.array([1, 1, 1, 1, -1, -1, -1], np.int8),
                       np.array([100.0, 99.9, 99.8, 99.5, 100.1, 100.2, 100.4]),
                       np.array([1.0, 2.0, 3.0, 4.0, 1.5, 2.5, 1.0]))
# After it: bids 100.0:3 99.9:2 99.8:3 99.7:5 99.5:4, asks 100.2:2.5 100.4:1.
DIFF = DepthUpdate(1, 105, False, np.array([1, 1, -1], np.int8), np.array([100.0, 99.7, 100.1]),
                   np.array([3.0, 5.0, 0.0]), first_update_id=95, prev_update_id=94)
NAMES = ("depthimb_l3", "depthmicro_l3", "depthslope_l3", "depthconc_l3", "depthimb_tick_l3_10",
         "depthflow_tick_l3_10", "depthimb_l20")


def values_after(*updates: DepthUpdate, names=NAMES) -> dict[str, float]:
    engine = FeatureEngine(names)
    for upd in updates:
        engine.on_depth(upd)
    return dict(zip(names, engine.values.tolist()))


def test_instantaneous_depth_features_by_hand():
    v = values_after(SNAPSHOT, DIFF)
    bid, ask = 3.0 + 2.0 + 3.0, 2.5 + 1.0  # the best 3 levels (the ask side has 2)
    mid = (100.0 + 100.2) / 2
    assert v["depthimb_l3"] == pytest.approx((bid - ask) / (bid + ask), rel=1e-12)
    assert v["depthimb_l20"] == pytest.approx((17.0 - ask) / (17.0 + ask), rel=1e-12)
    bid_px = (3 * 100.0 + 2 * 99.9 + 3 * 99.8) / bid
    ask_px = (2.5 * 100.2 + 1.0 * 100.4) / ask
    assert v["depthmicro_l3"] == pytest.approx(((bid_px * ask + ask_px * bid) / (bid + ask)) / mid - 1, rel=1e-9)
    assert v["depthslope_l3"] == pytest.approx(math.log((bid / (mid - 99.8)) / (ask / (100.4 - mid))), rel=1e-9)
    assert v["depthconc_l3"] == pytest.approx((3.0 + 2.5) / (bid + ask), rel=1e-12)


def test_smoothed_depth_features_by_hand():
    v = values_after(SNAPSHOT, DIFF)
    a = 2.0 / 11.0  # span 10 depth updates
    imb0, imb1 = (6.0 - 5.0) / 11.0, (8.0 - 3.5) / 11.5
    assert v["depthimb_tick_l3_10"] == pytest.approx(imb0 + a * (imb1 - imb0), rel=1e-12)
    # Flow: 0 on the snapshot, then +2 (bid 100.0) + 1.5 (the ask 100.1 pulled); over EW half depth.
    flow = 0.0 + a * (3.5 - 0.0)
    depth = 5.5 + a * (0.5 * 11.5 - 5.5)
    assert v["depthflow_tick_l3_10"] == pytest.approx(flow / depth, rel=1e-12)


def test_depth_features_are_nan_until_a_book_and_ignore_updates_without_one():
    assert all(math.isnan(x) for x in values_after(DIFF).values())  # a diff without a snapshot
    gap = DepthUpdate(2, 120, False, np.array([1], np.int8), np.array([100.0]), np.array([9.0]), 116, 115)
    assert values_after(SNAPSHOT, DIFF, gap) == values_after(SNAPSHOT, DIFF)  # invalid until a snapshot


# ---- a stream with depth: generated, with a sequence gap ------------------------------------------


def random_depth(ts_ns: np.ndarray, seed: int = 0, gap_at: float = 0.5, resync_at: float = 0.7) -> pa.Table:
    """Depth rows of a book around a random-walk mid at the times ``ts_ns``: a snapshot, diffs
    chained by pu, a diff lost at ``gap_at`` and a new snapshot at ``resync_at`` (fractions)."""
    rng = np.random.default_rng(seed)
    tick, mid, uid = 0.1, 1000.0, 1_000
    book = {}
    rows = []

    def emit(ts, u, first, prev, snap, levels):
        rows.extend({"ts_ns": int(ts), "recv_ns": int(ts) + 5_000_000, "update_id": u, "first_update_id": first,
                     "prev_update_id": prev, "is_snapshot": snap, "side": s, "price": p, "qty": q}
                    for s, p, q in levels)

    def snapshot(ts, u):
        emit(ts, u, None, None, True, [(s, p, q) for (s, p), q in book.items()])

    for k in range(1, 31):
        book[(1, round(mid - k * tick, 1))] = float(rng.integers(1, 50))
        book[(-1, round(mid + k * tick, 1))] = float(rng.integers(1, 50))
    snapshot(ts_ns[0], uid)
    n = len(ts_ns)
    for i, ts in enumerate(ts_ns[1:], 1):
        mid = round(mid + tick * rng.integers(-1, 2), 1)
        levels = []
        for _ in range(int(rng.integers(1, 6))):
            side = int(rng.choice([1, -1]))
            price = round(mid - side * tick * int(rng.integers(1, 25)), 1)
            qty = 0.0 if rng.random() < 0.3 else float(rng.integers(1, 80))
            levels.append((side, price, qty))
        for side, price, qty in levels:  # keep the book uncrossed around the mid
            book[(side, price)] = qty
        crossing = [(s, p) for (s, p) in book if (s > 0 and p >= mid) or (s < 0 and p <= mid)]
        levels += [(s, p, 0.0) for s, p in crossing]
        book = {key: q for key, q in book.items() if q > 0 and key not in crossing}
        first, uid = uid + 1, uid + int(rng.integers(1, 4))
        if i == int(gap_at * n):
            continue  # lost: the next diff does not chain
        if i == int(resync_at * n):
            snapshot(ts, uid)
            continue
        emit(ts, uid, first, first - 1 if i != int(gap_at * n) + 1 else first - 7, False, levels)
    return pa.Table.from_pylist(rows, schema=DEPTH)


@pytest.fixture(scope="module")
def ticks():
    batches = list(SyntheticSource(SyntheticSourceConfig(ticks=6_000), ("BTC/USDT:USDT",)).batches())
    return ({b.kind: b.rows for b in batches if b.kind in (Kind.TRADES, Kind.QUOTES)})


@pytest.fixture(scope="module")
def with_depth(ticks) -> tuple[EventArrays, pa.Table]:
    quotes = ticks[Kind.QUOTES]
    at = quotes["ts_ns"].to_numpy()[::3] + 1  # a depth update after every third quote
    depth = random_depth(at)
    return merge_events(ticks[Kind.TRADES], quotes, depth), depth


def online_values(events: EventArrays, depth: pa.Table, names) -> np.ndarray:
    """The engine fed as a daemon would: ticks as scalars, depth as raw updates in sequence (the
    updates without a valid book, which have no event in the batch stream, just before the next)."""
    engine = FeatureEngine(names)
    updates = iter(depth_updates(depth))
    out = np.empty((len(events), len(names)))
    for i, (ts, kind, price, qty, side, bid, bid_qty, ask, ask_qty) in enumerate(
            zip(*(c.tolist() for c in events.columns()))):
        if kind == KIND_QUOTE:
            engine.on_quote(ts, bid, bid_qty, ask, ask_qty)
        elif kind == KIND_TRADE:
            engine.on_trade(ts, price, qty, side)
        else:
            applied = engine.book.outcomes["applied"]
            while engine.book.outcomes["applied"] == applied:
                engine.on_depth(next(updates))
        out[i] = engine.values
    return out


DEPTH_NAMES = tuple(n for n in catalog() if catalog()[n].family.is_depth and "_1000" not in n
                    and not n.endswith("_z2000"))


def test_online_equals_batch_with_depth_gaps_and_a_resync(with_depth):
    events, depth = with_depth
    names = DEPTH_NAMES + ("rv_tick_20", "bookimb_l1", "ofi_tick_20_z200")
    batch, progress = run_program(compile_program(names), events)
    online = online_values(events, depth, names)
    np.testing.assert_array_equal(online, batch)
    # The gap left the depth features still until the resync snapshot.
    assert progress[-1, DEPTH_COUNTER] < (events.kind == KIND_DEPTH).sum() + 1
    warm = warm_mask(compile_program(names), progress, events)
    assert warm[-1].sum() > len(names) // 2 and np.isfinite(batch[warm]).all()


def test_depth_updates_change_no_other_feature(ticks, with_depth):
    events, _ = with_depth
    plain = merge_events(ticks[Kind.TRADES], ticks[Kind.QUOTES])
    names = tuple(n for n in quick_names() if not catalog()[n].family.is_depth)
    with_values, with_progress = run_program(compile_program(names), events)
    ticks_only = events.kind != KIND_DEPTH
    plain_values, plain_progress = run_program(compile_program(names), plain)
    np.testing.assert_array_equal(with_values[ticks_only], plain_values)
    np.testing.assert_array_equal(with_progress[ticks_only][:, :DEPTH_COUNTER], plain_progress[:, :DEPTH_COUNTER])


def test_without_depth_the_depth_features_stay_nan_and_never_warm(ticks):
    events = events_from_batches(SyntheticSource(SyntheticSourceConfig(ticks=3_000), ("BTC/USDT:USDT",)).batches())
    assert not (events.kind == KIND_DEPTH).any()
    names = ("depthimb_l5", "depthflow_tick_l5_10", "rv_tick_20")
    frame = extract(events, names)
    assert frame[list(names[:2])].isna().all().all() and not frame["warm"].any()
    assert extract(events, names[2:])["warm"].iloc[-1]
    engine = FeatureEngine(names)
    for ts, kind, price, qty, side, bid, bid_qty, ask, ask_qty in zip(*(c.tolist() for c in events.columns())):
        engine.on_quote(ts, bid, bid_qty, ask, ask_qty) if kind == KIND_QUOTE else engine.on_trade(ts, price, qty, side)
    assert not engine.warm and np.isnan(engine.values[:2]).all()


def test_depth_transforms_count_depth_updates():
    spec = catalog()["depthimb_l5_z200"]
    assert (spec.levels, spec.warmup.depth, spec.warmup.after_depth, spec.warmup.after_events) == (5, 2, 2400, 0)
    assert catalog()["depthflow_tick_l20_50"].warmup.depth == 10 * 50 + 2  # heavy-tailed: volume spans
    assert NO_ID == -1
