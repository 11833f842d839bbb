"""Depth in the feature dataset (pipeline.features.dataset): depth features are candidates only where
every day has depth, a day with depth gets finite depth features and unchanged other features and
labels, and a day whose look-back holds no snapshot reads depth from the last one before it."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import AppConfig, FeaturesConfig, LabelConfig, QualityConfig, SamplingConfig, SyntheticSourceConfig
from pipeline.data.ingest import ingest
from pipeline.data.schemas import DEPTH, Kind
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.data.store import NS_PER_DAY, TickStore
from pipeline.errors import AutoscalpError
from pipeline.features.catalog import catalog
from pipeline.features.dataset import (
    build_day, candidate_names, day_window, days_have_depth, depth_start_ns, lookback_start, plan_days, read_events,
)
from pipeline.features.core import KIND_DEPTH
from pipeline.features.events import EventArrays
from pipeline.features.families import Warmup
from pipeline.features.l2book import S_ASK, S_BID, SUMMARY_SIZE
from pipeline.features.store import DayKey, FeatureStore

SYMBOL = "BTC/USDT:USDT"
DAY1, DAY2 = DayKey("synthetic", SYMBOL, "2024-01-01"), DayKey("synthetic", SYMBOL, "2024-01-02")
CONFIG = AppConfig(
    labels=LabelConfig(tp_bps=2.0, sl_bps=2.0, horizon_seconds=30.0, fee_bps_per_side=1.0),
    features=FeaturesConfig(sampling=SamplingConfig(every="quote", stride=5)),
)
TICK_FEATURES = ["ret_tick_20", "spreadrel_l1", "bookimb_l1"]
DEPTH_FEATURES = ["depthimb_l5", "depthslope_l10", "depthflow_tick_l5_10", "depthimb_tick_l3_10_d50"]


def book_of_quotes(quotes: pa.Table, every: int, snapshots: tuple[int, ...] = (0,)) -> pa.Table:
    """Depth rows shadowing the quotes: at every ``every``-th quote a futures diff (ids chained by
    pu) sets the best levels and one deeper level per side, and removes what would cross; a
    snapshot of the book instead at the quote indices in ``snapshots``."""
    rng = np.random.default_rng(5)
    ts, bid, ask = (quotes[c].to_numpy() for c in ("ts_ns", "bid_px", "ask_px"))
    bid_qty, ask_qty = quotes["bid_qty"].to_numpy(), quotes["ask_qty"].to_numpy()
    book: dict[tuple[int, float], float] = {}
    rows, uid = [], 10_000
    for i in range(0, len(ts), every):
        b, a = round(float(bid[i]), 1), round(float(ask[i]), 1)
        levels = [(1, b, float(bid_qty[i]) or 1.0), (-1, a, float(ask_qty[i]) or 1.0),
                  (1, round(b - 0.1 * rng.integers(1, 20), 1), float(rng.integers(0, 5))),
                  (-1, round(a + 0.1 * rng.integers(1, 20), 1), float(rng.integers(0, 5)))]
        levels += [(s, p, 0.0) for (s, p) in book if (s > 0 and p > b) or (s < 0 and p < a)]
        for s, p, q in levels:
            book[(s, p)] = q
        book = {key: q for key, q in book.items() if q > 0}
        first, uid = uid + 1, uid + 3
        if i // every in snapshots:
            levels, first, prev, snap = [(s, p, q) for (s, p), q in book.items()], None, None, True
        else:
            prev, snap = first - 1, False
        rows += [{"ts_ns": int(ts[i]) + 1, "recv_ns": None, "update_id": uid, "first_update_id": first,
                  "prev_update_id": prev, "is_snapshot": snap, "side": s, "price": p, "qty": q} for s, p, q in levels]
    return pa.Table.from_pylist(rows, schema=DEPTH)


def store_with(root, starts: list[datetime], ticks: int, depth_every: int | None, snapshots=(0,)) -> TickStore:
    """Synthetic ticks from each start, and depth rows shadowing all of their quotes."""
    store = TickStore(root)
    for seed, start in enumerate(starts, 7):
        source = SyntheticSource(SyntheticSourceConfig(seed=seed, ticks=ticks, start=start), (SYMBOL,))
        ingest(source, store, QualityConfig())
    if depth_every:
        with store.locked():
            store.write("synthetic", SYMBOL, Kind.DEPTH,
                        book_of_quotes(store.read("synthetic", SYMBOL, Kind.QUOTES), depth_every, snapshots))
    return store


@pytest.fixture(scope="module")
def depth_store(tmp_path_factory) -> TickStore:
    """~30 minutes of synthetic ticks from 23:40, across midnight, with depth after every 2nd quote."""
    return store_with(tmp_path_factory.mktemp("ticks"), [datetime(2024, 1, 1, 23, 40, tzinfo=timezone.utc)], 30_000, 2)


def test_depth_features_are_candidates_only_where_every_day_has_depth(depth_store, tmp_path):
    plain = store_with(tmp_path, [datetime(2024, 1, 1, 23, 40, tzinfo=timezone.utc)], 2_000, None)
    assert not days_have_depth(plain, plan_days(plain)) and days_have_depth(depth_store, plan_days(depth_store))
    without = candidate_names(CONFIG, depth=False)
    assert not any(catalog()[n].family.is_depth for n in without)
    assert set(without) < set(candidate_names(CONFIG, depth=True))
    with pytest.raises(AutoscalpError, match="'depthimb_l5': depth features need depth rows"):
        candidate_names(CONFIG, ["rv_tick_20", "depthimb_l5"], depth=False)


def test_a_day_with_depth_has_finite_depth_features_and_the_same_other_features(depth_store, tmp_path):
    features = FeatureStore(tmp_path)
    with_depth = build_day(depth_store, features, DAY2, TICK_FEATURES + DEPTH_FEATURES, CONFIG)
    plain = build_day(depth_store, features, DAY2, TICK_FEATURES, CONFIG)
    assert with_depth.rows > 0 and with_depth.fingerprint != plain.fingerprint
    rows = features.read(DAY2, with_depth.fingerprint)
    assert np.isfinite(rows[DEPTH_FEATURES].to_numpy()).all()
    # Depth updates are neither rows nor steps of the labels; the tick features do not see them.
    same = features.read(DAY2, plain.fingerprint).set_index("ts_ns").loc[rows["ts_ns"]]
    columns = TICK_FEATURES + ["label", "fwd_return", "exit_ts_ns"]
    np.testing.assert_array_equal(rows[columns].to_numpy(), same[columns].to_numpy())


def test_depth_is_read_from_the_last_snapshot_before_a_lookback_without_one(tmp_path):
    # Three days, one snapshot at the very start: day 3's look-back (day 2) holds none.
    starts = [datetime(2024, 1, d, h, tzinfo=timezone.utc) for d, h in ((1, 23), (2, 12), (3, 1))]
    store = store_with(tmp_path, starts, 3_000, 5)
    depth = store.read("synthetic", SYMBOL, Kind.DEPTH)
    snapshot_ns = depth.filter(depth["is_snapshot"])["ts_ns"].to_numpy()
    assert len(set(snapshot_ns)) == 1 and snapshot_ns[0] < int(np.datetime64("2024-01-02", "ns").astype(np.int64))
    day3 = DayKey("synthetic", SYMBOL, "2024-01-03")
    assert day3 in plan_days(store)
    window = day_window(store, day3, CONFIG.labels)
    assert depth_start_ns(store, day3, window) == snapshot_ns[0] < window.read_start_ns
    events = read_events(store, day3, window, depth=True)
    assert events.ts_ns[0] >= window.read_start_ns and (events.kind == KIND_DEPTH).any()
    # Day 2's look-back (day 1) holds the snapshot: the look-back is enough.
    assert depth_start_ns(store, DAY2, day_window(store, DAY2, CONFIG.labels)) == day_window(
        store, DAY2, CONFIG.labels).read_start_ns
    assert window.read_start_ns - NS_PER_DAY < snapshot_ns[0]


def test_lookback_counts_depth_updates_and_a_depth_transform_after_them():
    kinds = "qdqddqdq"
    kind = np.array([{"q": 0, "d": KIND_DEPTH}[k] for k in kinds], np.int64)
    n = len(kinds)
    quote = kind == 0
    depth_row = np.where(~quote, np.cumsum(~quote) - 1, -1)
    summaries = np.ones(((~quote).sum(), SUMMARY_SIZE))
    summaries[:, S_BID], summaries[:, S_ASK] = 100.0, 100.1
    nan = np.full(n, np.nan)
    events = EventArrays(np.arange(n, dtype=np.int64) * 10**9, kind, nan, nan, np.zeros(n),
                         np.where(quote, 100.0, np.nan), np.where(quote, 1.0, np.nan),
                         np.where(quote, 100.1, np.nan), np.where(quote, 1.0, np.nan), depth_row, summaries)
    assert lookback_start(events, 7, Warmup(depth=2)) == 4  # depth updates 4 and 6
    assert lookback_start(events, 7, Warmup(depth=2, after_depth=1)) == 3  # 3 and 4, then 6
    assert lookback_start(events, 7, Warmup(quotes=2, depth=1)) == 5  # quotes 5 and 7, depth 6
