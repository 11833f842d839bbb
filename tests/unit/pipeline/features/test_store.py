"""The feature store and the day partitions written to it: layout, metadata, atomicity, fingerprints,
look-back across midnight, look-ahead for labels, and reuse without extraction."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import pipeline.features.dataset as dataset
from pipeline.config import AppConfig, FeaturesConfig, LabelConfig, QualityConfig, SamplingConfig, SyntheticSourceConfig
from pipeline.data.ingest import ingest
from pipeline.data.schemas import Kind
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.data.store import TickStore
from pipeline.errors import AutoscalpError
from pipeline.features.core import KIND_QUOTE, KIND_TRADE
from pipeline.features.dataset import (
    EmptyDatasetError, build_day, day_window, labelled_rows, lookback_start, merge_events, plan_days,
    read_dataset, sample_rows,
)
from pipeline.features.catalog import compile_program
from pipeline.features.engine import extract
from pipeline.features.events import EventArrays
from pipeline.features.families import Warmup
from pipeline.features.store import METADATA_KEY, DayKey, FeatureStore, definitions_version
from pipeline.labels import triple_barrier

SYMBOL = "BTC/USDT:USDT"
DAY1, DAY2 = DayKey("synthetic", SYMBOL, "2024-01-01"), DayKey("synthetic", SYMBOL, "2024-01-02")
MIDNIGHT_NS = int(np.datetime64("2024-01-02", "ns").astype(np.int64))
# Ring-buffer and level features: exact (to rounding, not merely 1e-3) once warm, whatever the start.
EXACT = ["ret_tick_20", "spreadrel_l1", "bookimb_l1", "smaslope_tick_10"]
CONFIG = AppConfig(
    labels=LabelConfig(tp_bps=2.0, sl_bps=2.0, horizon_seconds=30.0, fee_bps_per_side=1.0),
    features=FeaturesConfig(sampling=SamplingConfig(every="quote", stride=5)),
)


def ingest_synthetic(root, start: datetime, ticks: int, seed: int = 7) -> TickStore:
    store = TickStore(root)
    source = SyntheticSource(SyntheticSourceConfig(seed=seed, ticks=ticks, start=start), (SYMBOL,))
    ingest(source, store, QualityConfig())
    return store


@pytest.fixture(scope="module")
def ticks(tmp_path_factory) -> TickStore:
    """~30 minutes of synthetic ticks from 23:40, across midnight."""
    return ingest_synthetic(tmp_path_factory.mktemp("ticks"), datetime(2024, 1, 1, 23, 40, tzinfo=timezone.utc), 30_000)


def all_events(store: TickStore):
    return merge_events(store.read("synthetic", SYMBOL, Kind.TRADES), store.read("synthetic", SYMBOL, Kind.QUOTES))


# ---- the store itself -----------------------------------------------------------------------


def test_write_read_round_trip_with_metadata_in_the_schema_and_the_sidecar(tmp_path):
    store = FeatureStore(tmp_path)
    rows = pd.DataFrame({"ts_ns": np.arange(3, dtype=np.int64), "rsi_tick_20": [0.1, 0.2, 0.3],
                         "label": np.array([1, 0, -1], np.int8), "warm": True})
    metadata = {"fingerprint": "abc", "labels": {"tp_bps": 5.0}, "features": ["rsi_tick_20"]}
    path = store.write(DAY1, "abc", rows, metadata)
    assert path == tmp_path / "datasets/exchange=synthetic/symbol=BTC%2FUSDT%3AUSDT/date=2024-01-01/abc.parquet"
    assert store.has(DAY1, "abc") and not store.has(DAY1, "other")
    pd.testing.assert_frame_equal(store.read(DAY1, "abc"), rows)
    assert json.loads(pq.read_schema(path).metadata[METADATA_KEY]) == metadata
    assert store.metadata(DAY1, "abc") == metadata
    assert store.partitions() == [(DAY1, "abc")]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_partition_without_its_sidecar_is_not_in_the_store(tmp_path):
    store = FeatureStore(tmp_path)
    store.write(DAY1, "abc", pd.DataFrame({"ts_ns": [1]}), {})
    store.path(DAY1, "abc").with_suffix(".json").unlink()  # as if the writer died between the two files
    assert not store.has(DAY1, "abc") and store.partitions() == []
    with pytest.raises(AutoscalpError, match="not in the feature store"):
        store.read(DAY1, "abc")


def test_definitions_version_is_a_stable_hash():
    assert definitions_version() == definitions_version()
    assert len(definitions_version()) == 16 and int(definitions_version(), 16) >= 0


# ---- the pieces of a day --------------------------------------------------------------------


def stream(kinds: str, seconds: list[float], mids: list[float] | None = None) -> EventArrays:
    kind = np.array([KIND_QUOTE if k == "q" else KIND_TRADE for k in kinds], np.int64)
    n = len(kind)
    quote = kind == KIND_QUOTE
    mid = np.full(n, 100.0) if mids is None else np.asarray(mids, dtype=float)
    return EventArrays(
        (np.asarray(seconds) * 1e9).astype(np.int64), kind,
        np.where(quote, np.nan, 100.0), np.where(quote, np.nan, 1.0), np.zeros(n),
        np.where(quote, mid - 0.1, np.nan), np.where(quote, 1.0, np.nan), np.where(quote, mid + 0.1, np.nan),
        np.where(quote, 1.0, np.nan),
    )


def test_lookback_starts_where_every_warmup_count_and_duration_is_just_met():
    events = stream("qqtqtqqtqq", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    day_lo = 8  # counted from the start up to and including day_lo, as the engine counts a row
    assert lookback_start(events, day_lo, Warmup()) == 8
    assert lookback_start(events, day_lo, Warmup(quotes=3)) == 5  # quotes 5, 6, 8
    assert lookback_start(events, day_lo, Warmup(trades=2)) == 4  # trades 4, 7
    assert lookback_start(events, day_lo, Warmup(events=6)) == 3
    assert lookback_start(events, day_lo, Warmup(seconds=2.5)) == 5
    assert lookback_start(events, day_lo, Warmup(quotes=3, trades=3)) == 2
    assert lookback_start(events, day_lo, Warmup(quotes=3, after_events=2)) == 3  # 3 quotes by 6, then 7, 8
    assert lookback_start(events, day_lo, Warmup(quotes=100)) == 0  # not enough history: all of it
    assert lookback_start(events, 0, Warmup(quotes=3)) == 0
    moving = stream("qqqqqqqq", list(range(8)), mids=[100, 100, 101, 101, 102, 103, 103, 104])
    assert lookback_start(moving, 7, Warmup(moves=2)) == 4  # moves at 5 and 7, and a first quote to move from


def test_lookback_start_is_exactly_enough_for_the_engine(ticks):
    events = all_events(ticks)
    names = ["rsi_tick_20_z200", "ofi_time_1s", "sincelarge_x3", "tsi_tick_50"]
    need = compile_program(names).max_warmup()
    day_lo = len(events) // 2
    start = lookback_start(events, day_lo, need)
    assert 0 < start < day_lo
    assert extract(events.slice(start, day_lo + 1), names, np.array([day_lo - start]))["warm"].all()


def test_rows_are_sampled_inside_the_day_counted_from_its_first_quote():
    events = stream("qqtqtqqtqq", list(range(10)))
    assert sample_rows(events, 2, 10, SamplingConfig(every="quote", stride=2)).tolist() == [3, 6, 9]
    assert sample_rows(events, 2, 10, SamplingConfig(every="event", stride=3)).tolist() == [2, 5, 8]


def test_labelled_rows_are_warm_and_complete_with_the_label_columns(ticks):
    events = all_events(ticks)
    rows, counts = labelled_rows(events, 0, len(events), EXACT, CONFIG.labels, CONFIG.features.sampling)
    assert list(rows.columns) == ["ts_ns", *EXACT, "label", "fwd_return", "exit_ts_ns", "warm"]
    assert rows["warm"].all() and 0 < len(rows) < counts["sampled"]
    assert counts["warm"] < counts["sampled"] and counts["complete"] < counts["sampled"]
    assert rows["ts_ns"].iloc[-1] + 30 * 10**9 <= events.ts_ns[-1]  # the last horizon was observed
    assert (rows["exit_ts_ns"] > rows["ts_ns"]).all() and set(rows["label"]) == {-1, 0, 1}


def test_plan_days_lists_days_with_trades_and_quotes(ticks):
    assert plan_days(ticks) == [DAY1, DAY2]
    assert plan_days(ticks, [SYMBOL]) == [DAY1, DAY2]
    with pytest.raises(AutoscalpError, match="no day with both trades and quotes for ETH/USDT:USDT"):
        plan_days(ticks, ["ETH/USDT:USDT"])


def test_the_window_reads_a_day_back_and_the_horizon_ahead(ticks):
    window = day_window(ticks, DAY1, CONFIG.labels)
    assert window.read_start_ns == MIDNIGHT_NS - 2 * 86_400 * 10**9
    assert window.read_end_ns == MIDNIGHT_NS + 30 * 10**9
    assert window.dates() == ["2023-12-31", "2024-01-01", "2024-01-02"]
    assert window.later_data  # day 2 goes on past 00:00:30: day 1's last labels are complete
    assert not day_window(ticks, DAY2, CONFIG.labels).later_data  # nothing after day 2 is stored


# ---- a day through the feature store --------------------------------------------------------


def test_days_continue_across_midnight_features_looking_back_and_labels_ahead(ticks, tmp_path):
    features = FeatureStore(tmp_path)
    records = [build_day(ticks, features, key, EXACT, CONFIG) for key in (DAY1, DAY2)]
    assert [r.reused for r in records] == [False, False] and all(r.rows > 0 for r in records)
    day1, day2 = (features.read(r.key, r.fingerprint) for r in records)
    assert day1["ts_ns"].max() < MIDNIGHT_NS <= day2["ts_ns"].min() < MIDNIGHT_NS + 10**9  # warm from midnight

    # The same rows computed on the uninterrupted stream: the same features (to the rounding of
    # running sums of log prices, ~1e-14) and identical labels.
    events = all_events(ticks)
    lo = int(np.searchsorted(events.ts_ns, MIDNIGHT_NS))
    for frame, (start, stop) in ((day1, (0, lo)), (day2, (lo, len(events)))):
        emit = sample_rows(events, start, stop, CONFIG.features.sampling)
        full = extract(events, EXACT, emit)
        labels = triple_barrier(events, emit, CONFIG.labels)
        full["label"] = labels.label
        full = full[full["ts_ns"].isin(frame["ts_ns"])].reset_index(drop=True)
        assert len(full) == len(frame)
        np.testing.assert_allclose(full[EXACT].to_numpy(), frame[EXACT].to_numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(full["label"].to_numpy(), frame["label"].to_numpy())
    # Day 1's last rows got their labels from day 2's ticks.
    assert day1["exit_ts_ns"].max() >= MIDNIGHT_NS

    meta = features.metadata(DAY1, records[0].fingerprint)
    assert meta["labels"] == CONFIG.labels.model_dump() and meta["features"] == EXACT
    assert meta["costs"]["round_trip_fee_bps"] == 2.0 and meta["horizon"] == {"events": None, "seconds": 30.0}
    assert meta["definitions_version"] == definitions_version() and meta["rows"] == len(day1)
    assert sum(meta["label_counts"].values()) == len(day1)


def test_a_second_build_with_unchanged_inputs_extracts_nothing(ticks, tmp_path, monkeypatch):
    features = FeatureStore(tmp_path)
    first = build_day(ticks, features, DAY2, EXACT, CONFIG)
    written = features.path(DAY2, first.fingerprint).stat().st_mtime_ns

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted again")

    monkeypatch.setattr(dataset, "extract", no_extraction)
    again = build_day(ticks, features, DAY2, EXACT, CONFIG)
    assert again.reused and (again.fingerprint, again.rows, again.label_counts) == (
        first.fingerprint, first.rows, first.label_counts,
    )
    assert features.path(DAY2, first.fingerprint).stat().st_mtime_ns == written
    # Any input that changes the rows changes the fingerprint, so it is built, not reused.
    for changed in (
        CONFIG.model_copy(update={"labels": CONFIG.labels.model_copy(update={"tp_bps": 3.0})}),
        CONFIG.model_copy(update={"features": FeaturesConfig(sampling=SamplingConfig(stride=6))}),
    ):
        with pytest.raises(AssertionError, match="extracted again"):
            build_day(ticks, features, DAY2, EXACT, changed)
    with pytest.raises(AssertionError, match="extracted again"):
        build_day(ticks, features, DAY2, EXACT[:2], CONFIG)


def test_new_ticks_change_the_fingerprints_of_the_days_that_read_them(ticks, tmp_path):
    store = TickStore(tmp_path / "ticks")
    shutil.copytree(ticks.root, store.root)
    before = {key: dataset.day_fingerprint(store, key, EXACT, CONFIG.labels, CONFIG.features.sampling)
              for key in (DAY1, DAY2)}
    # A later day arrives: day 2's look-ahead is now known complete; day 1 reads nothing new.
    ingest_synthetic(store.root, datetime(2024, 1, 3, 0, 0, tzinfo=timezone.utc), 2_000, seed=8)
    after = {key: dataset.day_fingerprint(store, key, EXACT, CONFIG.labels, CONFIG.features.sampling)
             for key in (DAY1, DAY2)}
    assert after[DAY1] == before[DAY1] and after[DAY2] != before[DAY2]


def test_a_day_too_short_for_the_warmup_is_skipped_and_no_rows_at_all_is_an_error(ticks, tmp_path):
    features = FeatureStore(tmp_path)
    long_warmup = ["volspike_tick_2000"]  # 160,000 trades: far more than the 30 minutes hold
    record = build_day(ticks, features, DAY2, long_warmup, CONFIG)
    assert record.rows == 0 and "no usable row" in record.skipped and "warm" in record.skipped
    assert features.partitions() == []
    with pytest.raises(EmptyDatasetError, match="no feature rows to select on: .*no usable row"):
        read_dataset(features, [record])
