"""The lookahead / warm-up check catches a feature that reads the future and a warm-up declared too
short, and passes the shipped features."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.config import AppConfig, SyntheticSourceConfig
from pipeline.features.check import (
    WARMUP_RTOL,
    batch_values,
    check_features,
    quick_names,
    relative_error,
    robust_scale,
    run_check,
    synthetic_events,
)
from pipeline.features.core import KIND_QUOTE


@pytest.fixture(scope="module")
def events():
    return synthetic_events(SyntheticSourceConfig(ticks=12_000), "BTC/USDT:USDT")


NAMES = ("rv_tick_50", "tsi_tick_20", "bookimb_l1", "effratio_tick_20", "traderate_time_1s")


def test_the_shipped_features_pass(events):
    report = check_features(events, quick_names(), seed=3)
    assert report.ok, report.summary()
    assert report.exit_code == 0
    # volspike and sincelarge need 3,000+ trades (3,300 here); the simulator has no depth.
    no_depth = {n for n in quick_names() if n.startswith("depth")}
    assert set(report.unverified) <= {"volspike_tick_20", "sincelarge_x3"} | no_depth
    assert no_depth <= set(report.unverified)
    assert max(report.worst_warmup_error.values()) <= WARMUP_RTOL
    json.dumps(report.to_dict())  # the CLI prints it
    assert report.summary().endswith("OK")


def test_a_feature_shifted_one_event_into_the_future_leaks(events):
    def peeking(ev, names):
        values = batch_values(ev, names)
        j = names.index("tsi_tick_20")
        values[:-1, j] = values[1:, j]  # the value after the next trade: the future
        values[-1, j] = np.nan
        return values

    report = check_features(events, NAMES, compute=peeking, cuts=[5_000, 9_000], starts=[])
    assert [leak.name for leak in report.leaks] == ["tsi_tick_20"]
    assert report.leaks[0].row == 4_999  # the last row before the cut read the event at the cut
    assert report.exit_code == 1
    assert "LEAK tsi_tick_20" in report.summary()


def test_a_centred_window_leaks(events):
    mid = pd.Series(np.where(events.kind == KIND_QUOTE, (events.bid + events.ask) / 2, np.nan)).ffill()

    def centred(ev, names):
        values = batch_values(ev, names)
        n = len(ev)  # the truncated runs see only their own events, like any causal computation
        values[:, 0] = mid[:n].rolling(21, center=True, min_periods=1).mean().to_numpy()
        return values

    report = check_features(events, NAMES, compute=centred, cuts=3, starts=[], seed=1)
    assert [leak.name for leak in report.leaks] == ["rv_tick_50"]


def test_a_warmup_declared_too_short_is_reported_with_its_error(events):
    def slower(ev, names):
        # "rv_tick_50" computed as a 40x slower average: it needs ~12,000 quotes, declares 302.
        return batch_values(ev, tuple("rv_tick_2000" if n == "rv_tick_50" else n for n in names))

    report = check_features(events, NAMES, compute=slower, cuts=[], starts=[600, 1_500])
    assert [short.name for short in report.short_warmups] == ["rv_tick_50"]
    short = report.short_warmups[0]
    assert short.error > WARMUP_RTOL
    assert short.declared["quotes"] == 302
    assert short.still_off_after["quotes"] > 302  # how much it really needed, at least
    assert not report.leaks and report.exit_code == 1


def test_features_with_more_warmup_than_the_data_are_unverified_not_failed(events):
    report = check_features(events.slice(0, 3_000), ("rv_tick_2000", "rv_tick_5"), starts=2, cuts=1)
    assert report.unverified == ["rv_tick_2000"]
    assert report.ok


def test_groups_bound_memory_and_give_the_same_report(events):
    whole = check_features(events, NAMES, seed=5)
    grouped = check_features(events, NAMES, seed=5, memory_bytes=1)  # one feature per group
    assert whole.worst_warmup_error == grouped.worst_warmup_error


def test_relative_error_treats_nan_on_both_sides_as_equal():
    a = np.array([[1.0, np.nan, np.nan, 2.0, np.inf]])
    b = np.array([[1.5, np.nan, 3.0, np.inf, np.inf]])
    np.testing.assert_array_equal(relative_error(a, b, np.full(5, 0.5)), [[1.0, 0.0, np.inf, np.inf, 0.0]])


def test_robust_scale_ignores_tails_and_point_masses():
    rng = np.random.default_rng(0)
    bulk = rng.standard_normal(10_000)
    spiky = bulk.copy()
    spiky[:20] = 1e6  # a few huge spikes
    mostly_zero = np.where(rng.random(10_000) < 0.7, 0.0, bulk)
    values = np.column_stack([bulk, spiky, mostly_zero, np.zeros(10_000)])
    scale = robust_scale(values, np.ones_like(values, dtype=bool))
    assert scale[0] == pytest.approx(1.0, rel=0.1) and scale[1] == pytest.approx(1.0, rel=0.1)
    assert 0.2 < scale[2] < 1.0  # not the 0 a median absolute deviation gives
    assert scale[3] == 1.0


def test_run_check_quick_on_the_configured_simulator():
    report = run_check(AppConfig(), quick=True)
    assert report.ok, report.summary()
    assert report.events == 20_000 and len(report.names) == len(quick_names())
