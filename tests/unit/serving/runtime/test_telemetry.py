"""Telemetry: the Prometheus exposition from plain counters, feature drift (PSI) and the live hit rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from pipeline.training.aliases import VersionInfo
from serving.runtime.telemetry import DriftMonitor, HitRate, ReferenceBins, Telemetry, psi, reference_bins

SYMBOL = "BTC/USDT:USDT"
US = 1_000


def samples(telemetry: Telemetry) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(telemetry.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class FakeRuntime:
    version = VersionInfo("autoscalp-BTC-USDT-USDT", 7, ("champion",), {}, "run", created_ms=1_000_000)
    version_label = "autoscalp-BTC-USDT-USDT v7"


def test_latency_histogram_counters_and_state():
    t = Telemetry([SYMBOL], clock=lambda: 1_000 + 3_600.0)
    for latency_ns in (800, 1_500, 9 * US, 9 * US, 40 * US, 5_000 * US):
        t.tick(10_000, 10_000 + latency_ns)
    t.trade()
    t.set_queue_depth(3)
    t.set_account(10_050.0, 50.0, 0.01)
    t.set_position(SYMBOL, -0.002, 4.5)
    t.set_kill_switch("reducing", "stale market data")
    t.set_model(SYMBOL, FakeRuntime(), alert="v8 failed to load")
    got = samples(t)
    bucket = "autoscalp_tick_to_decision_seconds_bucket"
    assert got[(bucket, (("le", "1e-06"),))] == 1
    assert got[(bucket, (("le", "2.5e-06"),))] == 2
    assert got[(bucket, (("le", "7.5e-06"),))] == 2 and got[(bucket, (("le", "1.25e-05"),))] == 4
    assert got[(bucket, (("le", "1e-05"),))] == 4
    assert got[(bucket, (("le", "5e-05"),))] == 5
    assert got[(bucket, (("le", "0.001"),))] == 5 and got[(bucket, (("le", "+Inf"),))] == 6
    assert got[("autoscalp_tick_to_decision_seconds_count", ())] == 6
    assert got[("autoscalp_tick_to_decision_seconds_sum", ())] == pytest.approx(5.0603e-3)
    assert got[("autoscalp_ticks_total", ())] == 6 and got[("autoscalp_trades_total", ())] == 1
    assert got[("autoscalp_queue_depth", ())] == 3 and got[("autoscalp_pnl_usdt", ())] == 50.0
    assert got[("autoscalp_drawdown_ratio", ())] == 0.01
    assert got[("autoscalp_kill_switch", (("state", "reducing"),))] == 1
    assert got[("autoscalp_kill_switch", (("state", "active"),))] == 0
    symbol = (("symbol", SYMBOL),)
    assert got[("autoscalp_position_qty", symbol)] == -0.002 and got[("autoscalp_leverage", symbol)] == 4.5
    assert got[("autoscalp_model_version", symbol)] == 7 and got[("autoscalp_model_alert", symbol)] == 1
    assert got[("autoscalp_model_age_seconds", symbol)] == pytest.approx(3_600.0)
    health = t.health()
    assert health["models"][SYMBOL] == {"version": 7, "model": FakeRuntime.version_label, "age_s": 3_600.0,
                                        "alert": "v8 failed to load"}  # fmt: skip
    assert health["kill_switch"] == {"state": "reducing", "reason": "stale market data"}
    assert health["ticks"] == 6 and health["last_tick_age_s"] is not None
    # its own registry: nothing lands in the process-wide default one
    assert REGISTRY.get_sample_value("autoscalp_ticks_total") is None


def test_latency_quantiles_from_the_buckets_as_prometheus_interpolates():
    t = Telemetry([SYMBOL])
    assert math.isnan(t.latency_quantile_us(0.5))
    for latency_us in [3] * 50 + [12] * 49 + [2_000]:  # buckets (2.5, 5], (10, 12.5], above 1000
        t.tick(0, latency_us * US)
    assert t.latency_quantile_us(0.5) == 5.0  # the 50th of 100 is the last of (2.5, 5]
    assert t.latency_quantile_us(0.25) == 3.75  # half-way through (2.5, 5]
    assert t.latency_quantile_us(0.99) == 12.5
    assert t.latency_quantile_us(1.0) == 1_000.0  # above the largest bound: that bound


def test_psi_is_small_for_the_training_distribution_and_large_after_a_shift():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20_000, 3))
    train[::7, 2] = np.nan
    bins = reference_bins(train, ("a", "b", "c"))
    assert bins.edges.shape == (3, 9) and np.allclose(bins.expected.sum(axis=1), 1.0)
    assert ReferenceBins.from_json(bins.to_json()).edges.tolist() == bins.edges.tolist()
    names = ("x", "c", "a", "b")  # the runtime's vector, in its own order
    monitor = DriftMonitor(bins, names, window=2_000, every=1)
    live = rng.normal(size=(2_000, 3))
    for row in live:
        monitor.observe(np.array([0.0, row[2], row[0], row[1]]))
    assert max(monitor.psi().values()) < 0.05
    for row in live:
        monitor.observe(np.array([0.0, row[2], row[0] + 1.0, row[1]]))  # feature a drifts by one sigma
    drifted = monitor.psi()
    assert drifted["a"] > 0.25 and drifted["b"] < 0.05 and drifted["c"] < 0.05  # the window evicted the old rows
    # the PSI formula on shares
    actual, expected = np.array([[0.2, 0.3, 0.5]]), np.array([[0.3, 0.3, 0.4]])
    by_hand = (0.2 - 0.3) * math.log(0.2 / 0.3) + (0.5 - 0.4) * math.log(0.5 / 0.4)
    assert psi(actual, expected)[0] == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="not in the feature vector"):
        DriftMonitor(bins, ("a", "b"))


def test_drift_samples_every_nth_row_and_ignores_nan():
    bins = reference_bins(np.arange(100.0)[:, None], ("a",), bins=4)
    monitor = DriftMonitor(bins, ("a",), window=10, every=5)
    for _ in range(9):
        monitor.observe(np.array([np.nan]))
    assert math.isnan(monitor.psi()["a"])  # one sampled row, NaN: nothing to compare
    for i in range(50):
        monitor.observe(np.array([float(i % 100)]))
    assert np.isfinite(monitor.psi()["a"])


def test_hit_rate_judges_predictions_after_the_horizon_in_event_time():
    s = 1_000_000_000
    hit = HitRate(horizon_s=5.0, min_gap_s=1.0, window=10)
    hit.observe(0, 100.0, 0.7)  # says up
    hit.observe(s // 2, 100.0, 0.2)  # within the gap: not taken
    hit.observe(s, 100.0, 0.3)  # says down
    hit.observe(2 * s, 100.0, 0.5)  # no direction
    hit.observe(3 * s, 100.0, 0.9)  # says up
    assert math.isnan(hit.rate)
    hit.observe(5 * s, 101.0, math.nan)  # judges the first: up, hit
    hit.observe(6 * s, 102.0, math.nan)  # the second said down: miss
    hit.observe(8 * s, 100.0, math.nan)  # the third: flat
    assert (hit.hits, hit.misses, hit.flats) == (1, 1, 1) and hit.rate == 0.5
    t = Telemetry([SYMBOL])
    t.observe_prediction(SYMBOL, 0, 100.0, 0.6)
    t.observe_prediction(SYMBOL, 6 * s, 100.5, 0.6)
    got = samples(t)
    assert got[("autoscalp_hit_rate", (("symbol", SYMBOL),))] == 1.0
    assert got[("autoscalp_predictions_judged_total", (("outcome", "hit"), ("symbol", SYMBOL)))] == 1


def test_drift_metrics_per_feature():
    bins = reference_bins(np.random.default_rng(1).normal(size=(1_000, 2)), ("a", "b"))
    t = Telemetry([SYMBOL])
    monitor = DriftMonitor(bins, ("a", "b"), window=100, every=1)
    t.set_drift(SYMBOL, monitor)
    for _ in range(100):
        monitor.observe(np.array([5.0, 0.0]))
    got = samples(t)
    a = got[("autoscalp_feature_psi", (("feature", "a"), ("symbol", SYMBOL)))]
    assert a > 1.0 and got[("autoscalp_feature_psi_max", (("symbol", SYMBOL),))] == a
