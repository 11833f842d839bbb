"""What the daemon reports: Prometheus metrics in their own registry, and the /health snapshot.

The trading thread only touches plain Python numbers (a few tens of ns each); the Prometheus
metric families are built from them when /metrics is scraped (``Telemetry.registry`` has one
collector). prometheus_client's own ``Histogram.observe`` takes a lock per bucket and sum (~1-2 us),
more than the budget allows on every tick, so the latency histogram is kept here as bucket counts.

- latency: ``tick(start_ns, end_ns)`` per decision (``time.perf_counter_ns`` around the decision
  path), microsecond buckets ``LATENCY_BUCKETS_US``; it also counts ticks (ticks/s is
  ``rate(autoscalp_ticks_total[1m])``) and keeps the time of the last tick for /health.
- state the daemon sets when it changes or on its clock (every ~100 ms): queue depth, equity,
  PnL, drawdown, positions and leverage, kill switch, the trading model and its alert.
- ``DriftMonitor``: PSI of the live distribution of each model feature over a rolling window
  against reference bins (quantiles of the training rows, ``reference_bins``).
- ``HitRate``: the share of directional predictions whose mid moved the predicted way after a
  horizon, in event time.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numba import njit
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from pipeline.monitoring.drift import PSI_EPS, ReferenceBins, psi, reference_bins  # noqa: F401 (re-exported)
from serving.risk.kill_switch import STATES

# 2.5 us wide up to 20 (around the 10 us p50 / 20 us p99 target: the daemon's quantiles agree with
# bench/latency.py within a bucket), coarser above; 10 and 1000 stay (conf/monitoring alerts tests)
LATENCY_BUCKETS_US = (1, 2.5, 5, 7.5, 10, 12.5, 15, 17.5, 20, 25, 30, 40, 50, 75, 100, 200, 500, 1000)
NAN = math.nan


def latency_quantile_us(counts: Sequence[int], q: float) -> float:
    """The ``q``-quantile of latencies counted in the buckets of ``LATENCY_BUCKETS_US`` (one more
    count at the end: above the largest bound), interpolated linearly within its bucket as
    Prometheus' ``histogram_quantile`` does; in the bucket above the largest bound: that bound.
    NaN when nothing was counted. Differences of two snapshots give a window's quantiles."""
    total = sum(counts)
    if not total:
        return NAN
    rank, below = q * total, 0
    for i, count in enumerate(counts):
        if count and below + count >= rank:
            if i == len(LATENCY_BUCKETS_US):
                return float(LATENCY_BUCKETS_US[-1])
            lower = LATENCY_BUCKETS_US[i - 1] if i else 0
            return lower + (LATENCY_BUCKETS_US[i] - lower) * (rank - below) / count
        below += count
    return float(LATENCY_BUCKETS_US[-1])


# ---- feature drift ---------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _drift_push(edges, columns, values, window, pos, counts, valid):
    """Bin the row's features into slot ``pos`` of the window, evicting the row that was there."""
    for j in range(columns.shape[0]):
        old = window[pos, j]
        if old >= 0:
            counts[j, old] -= 1
            valid[j] -= 1
        x = values[columns[j]]
        if x != x:
            window[pos, j] = -1
            continue
        b = 0
        while b < edges.shape[1] and edges[j, b] <= x:
            b += 1
        window[pos, j] = b
        counts[j, b] += 1
        valid[j] += 1


class DriftMonitor:
    """PSI of each reference feature over the last ``window`` sampled rows (every ``every``-th call)."""

    def __init__(self, reference: ReferenceBins, vector_names: Sequence[str], window: int = 5000,
                 every: int = 10, min_rows: int = 1) -> None:  # fmt: skip
        self.min_rows = min_rows  # fewer sampled rows of a feature: its PSI is NaN (too noisy to say)
        index = {name: i for i, name in enumerate(vector_names)}
        missing = [n for n in reference.names if n not in index]
        if missing:
            raise ValueError(f"reference features not in the feature vector: {missing}")
        self.reference = reference
        self.every = every
        k, bins = reference.expected.shape
        self._edges = np.ascontiguousarray(reference.edges, dtype=np.float64).reshape(k, bins - 1)
        self._columns = np.array([index[n] for n in reference.names], dtype=np.intp)
        self._window = np.full((window, k), -1, dtype=np.int16)
        self._counts = np.zeros((k, bins), dtype=np.int64)
        self._valid = np.zeros(k, dtype=np.int64)
        self._pos = 0
        self._skip = 0
        example = np.zeros(len(vector_names))
        self._push = _drift_push.compile(tuple(numba.typeof(a) for a in (
            self._edges, self._columns, example, self._window, 0, self._counts, self._valid)))  # fmt: skip

    def observe(self, values: np.ndarray) -> None:
        """One feature vector (the runtime's, float64); cheap when skipped."""
        self._skip += 1
        if self._skip < self.every:
            return
        self._skip = 0
        self._push(self._edges, self._columns, values, self._window, self._pos, self._counts, self._valid)
        self._pos = (self._pos + 1) % self._window.shape[0]

    def psi(self) -> dict[str, float]:
        """PSI per feature (NaN for a feature with no finite value in the window)."""
        counts, valid = self._counts.copy(), self._valid.copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            values = psi(counts / valid[:, None], self.reference.expected)
        values[valid < max(self.min_rows, 1)] = NAN
        return dict(zip(self.reference.names, values.tolist()))

    def max_psi(self) -> tuple[float, str]:
        """The largest feature PSI and its feature (NaN, "" while none has enough rows)."""
        finite = [(v, n) for n, v in self.psi().items() if v == v]
        return max(finite) if finite else (NAN, "")


# ---- live hit rate ---------------------------------------------------------------------------


class HitRate:
    """Directional predictions (P(up) > 0.5 says up, < 0.5 down), at most one per ``min_gap_s``
    of event time, judged ``horizon_s`` later: a hit when the mid moved the predicted way, a miss
    when it moved the other way, flat when it did not move (not in the rate)."""

    def __init__(self, horizon_s: float = 5.0, min_gap_s: float = 1.0, window: int = 500) -> None:
        self.horizon_ns = int(horizon_s * 1e9)
        self.gap_ns = int(min_gap_s * 1e9)
        self._pending: deque[tuple[int, float, int]] = deque()
        self._recent: deque[int] = deque(maxlen=window)  # 1 hit, 0 miss
        self._next_ns = -(2**63)
        self.hits = self.misses = self.flats = 0

    def observe(self, ts_ns: int, mid: float, p_up: float) -> None:
        pending = self._pending
        while pending and pending[0][0] <= ts_ns:
            _, then, side = pending.popleft()
            move = (mid - then) * side
            if move > 0.0:
                self.hits += 1
                self._recent.append(1)
            elif move < 0.0:
                self.misses += 1
                self._recent.append(0)
            else:
                self.flats += 1
        if ts_ns >= self._next_ns and p_up != 0.5 and p_up == p_up:
            pending.append((ts_ns + self.horizon_ns, mid, 1 if p_up > 0.5 else -1))
            self._next_ns = ts_ns + self.gap_ns

    @property
    def rate(self) -> float:
        """Hits over hits and misses among the last ``window`` judged (NaN before any)."""
        recent = list(self._recent)
        return sum(recent) / len(recent) if recent else NAN


# ---- the telemetry ---------------------------------------------------------------------------


@dataclass
class ModelStatus:
    version: int | None = None
    label: str = "no model"
    created_s: float | None = None
    alert: str | None = None


class Telemetry:
    """Metrics and health of one daemon. The trading thread calls the update methods; /metrics and
    /health read from any thread."""

    def __init__(self, symbols: Sequence[str], clock: Callable[[], float] = time.time,
                 hit_horizon_s: float = 5.0, hit_min_gap_s: float = 1.0) -> None:  # fmt: skip
        self.symbols = tuple(symbols)
        self.clock = clock
        self._bounds_ns = [b * 1000 for b in LATENCY_BUCKETS_US]
        self._buckets = [0] * (len(self._bounds_ns) + 1)  # the last: above the largest bound
        self._latency_sum_ns = 0
        self.ticks = 0
        self.trades = 0
        self.last_tick_ns = 0  # perf_counter_ns at the end of the last decision
        self.queue_depth = 0
        self.state = "starting"
        self.feeds: dict[str, str] = {}
        self.equity_usdt = self.pnl_usdt = self.drawdown = NAN
        self.position_qty = {s: 0.0 for s in self.symbols}
        self.leverage = {s: 0.0 for s in self.symbols}
        self.kill_state, self.kill_reason = STATES[0], ""
        self.models = {s: ModelStatus() for s in self.symbols}
        self.drift: dict[str, DriftMonitor] = {}
        self.drift_note: dict[str, str] = {}  # why a symbol has no drift monitor ("no drift reference")
        self.retrain_requests: dict[str, int] = {}  # outcome (prefect | journaled | failed) -> count
        self.last_retrain_request: dict[str, Any] | None = None
        self.exported_rows: dict[str, int] = {}  # decisions | fills -> rows exported to the store
        self.hit = {s: HitRate(hit_horizon_s, hit_min_gap_s) for s in self.symbols}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))
        self._lock = threading.Lock()  # serialises scrapes

    # ---- the hot path ----

    def tick(self, start_ns: int, end_ns: int) -> None:
        """One decision, timed by the caller with ``time.perf_counter_ns``."""
        latency = end_ns - start_ns
        self._buckets[bisect_left(self._bounds_ns, latency)] += 1
        self._latency_sum_ns += latency
        self.ticks += 1
        self.last_tick_ns = end_ns

    def trade(self) -> None:
        self.trades += 1

    # ---- state, when it changes (or on the daemon's clock) ----

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth = depth

    def set_state(self, state: str) -> None:
        self.state = state

    def set_feed(self, name: str, status: str) -> None:
        self.feeds[name] = status

    def set_account(self, equity_usdt: float, pnl_usdt: float, drawdown: float) -> None:
        """``drawdown``: 1 - equity / peak (0.05 = 5 % below the peak)."""
        self.equity_usdt, self.pnl_usdt, self.drawdown = equity_usdt, pnl_usdt, drawdown

    def set_position(self, symbol: str, qty_base: float, leverage: float) -> None:
        self.position_qty[symbol] = qty_base
        self.leverage[symbol] = leverage

    def set_kill_switch(self, state: str, reason: str = "") -> None:
        self.kill_state, self.kill_reason = state, reason

    def set_model(self, symbol: str, runtime: Any, alert: str | None = None) -> None:
        """The runtime now trading ``symbol`` (a ``ModelRuntime`` or None) and the watcher's alert."""
        version = getattr(runtime, "version", None)
        created = version.created_ms / 1e3 if version is not None and version.created_ms is not None else None
        label = runtime.version_label if runtime is not None else "no model"
        self.models[symbol] = ModelStatus(version.version if version is not None else None, label, created, alert)

    def set_drift(self, symbol: str, monitor: DriftMonitor | None, note: str = "") -> None:
        """The trading model's drift monitor, or None and why (``note``)."""
        if monitor is None:
            self.drift.pop(symbol, None)
            self.drift_note[symbol] = note or "no drift reference"
        else:
            self.drift[symbol] = monitor
            self.drift_note.pop(symbol, None)

    def note_retrain_request(self, outcome: str, reason: str, detail: str = "") -> None:
        self.retrain_requests[outcome] = self.retrain_requests.get(outcome, 0) + 1
        self.last_retrain_request = {"at": self.clock(), "outcome": outcome, "reason": reason, "detail": detail}

    def note_export(self, kind: str, rows: int) -> None:
        self.exported_rows[kind] = self.exported_rows.get(kind, 0) + rows

    def drift_status(self, symbol: str) -> dict[str, Any]:
        monitor = self.drift.get(symbol)
        if monitor is None:
            return {"note": self.drift_note.get(symbol, "no model")}
        value, feature = monitor.max_psi()
        return {"max_psi": value if value == value else None, "feature": feature or None,
                "rows": int(monitor._valid.max(initial=0))}

    def observe_prediction(self, symbol: str, ts_ns: int, mid: float, p_up: float) -> None:
        self.hit[symbol].observe(ts_ns, mid, p_up)

    # ---- readers ----

    def model_age_s(self, symbol: str) -> float | None:
        created = self.models[symbol].created_s
        return self.clock() - created if created is not None else None

    def latency_quantile_us(self, q: float) -> float:
        """The ``q``-quantile of tick-to-decision latency so far (``latency_quantile_us``)."""
        return latency_quantile_us(list(self._buckets), q)

    def last_tick_age_s(self) -> float | None:
        return (time.perf_counter_ns() - self.last_tick_ns) / 1e9 if self.ticks else None

    def health(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "feeds": dict(self.feeds),
            "kill_switch": {"state": self.kill_state, "reason": self.kill_reason},
            "models": {s: {"version": m.version, "model": m.label, "age_s": self.model_age_s(s), "alert": m.alert}
                       for s, m in self.models.items()},  # fmt: skip
            "last_tick_age_s": self.last_tick_age_s(),
            "ticks": self.ticks,
            "queue_depth": self.queue_depth,
            "drift": {s: self.drift_status(s) for s in self.symbols},
            "retrain_request": self.last_retrain_request,
        }

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        with self._lock:
            return generate_latest(self.registry)


class _Collector:
    """Builds the metric families from ``Telemetry``'s numbers at scrape time."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.t = telemetry

    def collect(self):  # noqa: ANN201 (prometheus_client's collector protocol)
        t = self.t
        counts = list(t._buckets)
        cumulative, total = [], 0
        for bound_us, count in zip((*LATENCY_BUCKETS_US, "+Inf"), counts):
            total += count
            cumulative.append((str(bound_us / 1e6) if bound_us != "+Inf" else "+Inf", total))
        yield HistogramMetricFamily("autoscalp_tick_to_decision_seconds", "Tick-to-decision latency",
                                    buckets=cumulative, sum_value=t._latency_sum_ns / 1e9)  # fmt: skip
        yield CounterMetricFamily("autoscalp_ticks", "Book updates decided on", value=t.ticks)
        yield CounterMetricFamily("autoscalp_trades", "Public trades received", value=t.trades)
        yield GaugeMetricFamily("autoscalp_queue_depth", "Events waiting for the trading loop", value=t.queue_depth)
        yield GaugeMetricFamily("autoscalp_equity_usdt", "Account equity", value=t.equity_usdt)
        yield GaugeMetricFamily("autoscalp_pnl_usdt", "PnL since the daemon started", value=t.pnl_usdt)
        yield GaugeMetricFamily("autoscalp_drawdown_ratio", "1 - equity / peak equity", value=t.drawdown)
        kill = GaugeMetricFamily("autoscalp_kill_switch", "1 for the kill switch's state", labels=["state"])
        for state in STATES:
            kill.add_metric([state], 1.0 if state == t.kill_state else 0.0)
        yield kill
        position = GaugeMetricFamily("autoscalp_position_qty", "Net position, base coin", labels=["symbol"])
        leverage = GaugeMetricFamily("autoscalp_leverage", "Leverage in use", labels=["symbol"])
        version = GaugeMetricFamily("autoscalp_model_version", "Registry version trading", labels=["symbol"])
        age = GaugeMetricFamily("autoscalp_model_age_seconds", "Since the trading version was registered",
                                labels=["symbol"])  # fmt: skip
        alert = GaugeMetricFamily("autoscalp_model_alert", "1 while a new champion fails to load", labels=["symbol"])
        hit_rate = GaugeMetricFamily("autoscalp_hit_rate", "Share of directional predictions that moved the "
                                     "predicted way", labels=["symbol"])  # fmt: skip
        judged = CounterMetricFamily("autoscalp_predictions_judged", "Predictions judged after the horizon",
                                     labels=["symbol", "outcome"])  # fmt: skip
        drift = GaugeMetricFamily("autoscalp_feature_psi", "PSI of the live feature distribution vs training",
                                  labels=["symbol", "feature"])  # fmt: skip
        drift_max = GaugeMetricFamily("autoscalp_feature_psi_max", "Largest feature PSI", labels=["symbol"])
        for symbol in t.symbols:
            position.add_metric([symbol], t.position_qty[symbol])
            leverage.add_metric([symbol], t.leverage[symbol])
            model = t.models[symbol]
            version.add_metric([symbol], model.version if model.version is not None else NAN)
            model_age = t.model_age_s(symbol)
            age.add_metric([symbol], model_age if model_age is not None else NAN)
            alert.add_metric([symbol], 1.0 if model.alert else 0.0)
            hits = t.hit[symbol]
            hit_rate.add_metric([symbol], hits.rate)
            for outcome, value in (("hit", hits.hits), ("miss", hits.misses), ("flat", hits.flats)):
                judged.add_metric([symbol, outcome], value)
            monitor = t.drift.get(symbol)
            if monitor is not None:
                values = monitor.psi()
                for feature, value in values.items():
                    drift.add_metric([symbol, feature], value)
                finite = [v for v in values.values() if v == v]
                drift_max.add_metric([symbol], max(finite) if finite else NAN)
        yield from (position, leverage, version, age, alert, hit_rate, judged, drift, drift_max)
        requests = CounterMetricFamily("autoscalp_retrain_requests", "Early retrains asked for on drift",
                                       labels=["outcome"])  # fmt: skip
        for outcome, count in sorted(t.retrain_requests.items()):
            requests.add_metric([outcome], count)
        yield requests
        exported = CounterMetricFamily("autoscalp_feedback_rows", "Journal rows exported to the store",
                                       labels=["kind"])  # fmt: skip
        for kind, count in sorted(t.exported_rows.items()):
            exported.add_metric([kind], count)
        yield exported
