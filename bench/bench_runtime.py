"""The live model runtime per tick, and what observability and the champion watcher add to it.

Not a test: run it (`.venv/bin/python bench/bench_runtime.py`) and it records what it measured in
bench/results/runtime.json, with the machine and the git revision. One thread for the libraries.

- runtime.on_quote: ``ModelRuntime.on_quote`` (the engine's 14 role features + 25 model features,
  39 in all, and the compiled ensemble with the LSTM ring of the quote's phase), per call, over the
  quotes of a synthetic stream after a warm-up; beside it its two parts alone (the feature engine
  over the same 39 features, and ``CompiledEnsemble.proba_tick_in``). Latency percentiles from
  ``perf_counter_ns`` around each call (its own ~0.05 us included and reported).
- hot-path extras, mean ns per call over a tight loop: ``Telemetry.tick`` (the latency histogram,
  tick counter), ``RecentTicks.append``, ``ChampionWatcher.swap_ready`` with nothing offered,
  ``ControlServer.pending`` with no command, ``DriftMonitor.observe`` (sampling every 10th row, and
  every row), ``HitRate.observe``.
- swap under load: a champion promoted in a real MLflow registry (temporary home) while the loop
  trades at --pace-us per tick; the tick latency while the watcher loads, exports, compiles and
  warms the new version in its thread, against the same loop with the watcher idle.

Models: default params of each kind (forest 100 trees depth 8, XGBoost up to 500 rounds
early-stopped, LSTM window 16 hidden 32, isotonic calibration), fitted on the stream's sampled
feature rows (every 10th quote) with the next 10 quotes' mid move as the label.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from provenance import provenance  # noqa: E402

import numpy as np  # noqa: E402

from pipeline.config import SyntheticSourceConfig, TrackingConfig  # noqa: E402
from pipeline.features.check import synthetic_events  # noqa: E402
from pipeline.features.core import KIND_QUOTE, KIND_TRADE  # noqa: E402
from pipeline.features.engine import FeatureEngine  # noqa: E402
from pipeline.models.base import make_model  # noqa: E402
from pipeline.models.ensemble import Ensemble  # noqa: E402
from serving.backtest.signals import feature_rows  # noqa: E402
from serving.config import EngineConfig  # noqa: E402
from serving.events import Quote, Trade  # noqa: E402
from serving.runtime.http import ControlServer  # noqa: E402
from serving.runtime.model import ModelRuntime, compiled_ensemble  # noqa: E402
from serving.runtime.telemetry import DriftMonitor, HitRate, Telemetry, reference_bins  # noqa: E402
from serving.runtime.watcher import ChampionWatcher, RecentTicks  # noqa: E402

SYMBOL = "BTC/USDT:USDT"
ROLES = tuple(EngineConfig().features.model_dump().values())
MODEL_25 = (
    "rv_time_5s", "ofi_time_1s", "tsi_time_10s", "traderate_time_5s", "vwapdev_time_30s", "ret_tick_20",
    "microdev_l1", "rv_tick_50_z2000", "ofi_tick_100_z2000", "spreadrel_l1_z2000", "sincelarge_x5", "ret_tick_5",
    "ret_tick_50", "ret_tick_200", "rv_tick_200", "rv_time_1s", "rv_time_30s", "tickvol_tick_20", "atr_tick_20",
    "ret_time_1s", "ret_time_10s", "rv_tick_20", "ret_tick_100_z200", "tickvol_tick_500", "atr_tick_500",
)  # fmt: skip
STRIDE = 10


def percentiles(ns: np.ndarray) -> dict[str, float]:
    us = np.asarray(ns, dtype=np.float64) / 1e3
    return {"p50_us": round(float(np.percentile(us, 50)), 3), "p99_us": round(float(np.percentile(us, 99)), 3),
            "p999_us": round(float(np.percentile(us, 99.9)), 3), "max_us": round(float(us.max()), 1),
            "mean_us": round(float(us.mean()), 3), "calls": int(len(us))}  # fmt: skip


def market_events(events) -> list:
    out = []
    columns = (events.ts_ns, events.kind, events.price, events.qty, events.side, events.bid, events.bid_qty,
               events.ask, events.ask_qty)  # fmt: skip
    for ts, kind, price, qty, side, bid, bid_qty, ask, ask_qty in zip(*(c.tolist() for c in columns)):
        if kind == KIND_QUOTE:
            out.append(Quote(SYMBOL, ts, bid, bid_qty, ask, ask_qty))
        elif kind == KIND_TRADE:
            out.append(Trade(SYMBOL, ts, price, qty, int(side)))
    return out


def fit_ensemble(events, train_rows: int, xgb_rounds: int = 200) -> tuple[Ensemble, np.ndarray]:
    quote_index, values, warm = feature_rows(events, MODEL_25)
    mid = 0.5 * (events.bid + events.ask)[quote_index]
    ahead = np.r_[mid[STRIDE:], np.full(STRIDE, np.nan)]
    rows = np.flatnonzero(warm & np.isfinite(ahead))[::STRIDE]
    X, y = values[rows], (ahead[rows] > mid[rows]).astype(np.int64)
    a = min(train_rows, int(len(X) * 0.7))
    b = min(len(X), a + a // 4)
    # XGBoost without early stopping: on this weak label it would stop after a few rounds; with it
    # off the model has as many trees as the product allows (pipeline/models/xgb.py: 200 rounds), the
    # slowest a champion with default parameters serves
    params = {"xgb": {"early_stopping_rounds": 0, "n_estimators": xgb_rounds}}
    members = {kind: make_model(kind, params.get(kind), seed=7).fit(X[:a], y[:a], X[a:b], y[a:b])
               for kind in ("logistic", "forest", "lstm", "xgb")}  # fmt: skip
    return Ensemble(members, feature_names=MODEL_25), X[:a]


def time_on_quote(runtime: ModelRuntime, stream: list, start: int) -> dict:
    runtime.warm_up(stream[:start])
    ns, ok, clock = [], 0, time.perf_counter_ns
    gc.disable()
    try:
        for event in stream[start:]:
            if type(event) is Quote:
                t0 = clock()
                _, _, good = runtime.on_quote(event)
                ns.append(clock() - t0)
                ok += good
            else:
                runtime.on_trade(event)
    finally:
        gc.enable()
    return percentiles(np.array(ns)) | {"ok_share": round(ok / len(ns), 4)}


def time_parts(ensemble_runtime: ModelRuntime, stream: list, start: int) -> dict:
    engine = FeatureEngine(ensemble_runtime.names)
    clock = time.perf_counter_ns
    feature_ns = []
    rows = []
    columns = [ensemble_runtime.names.index(n) for n in MODEL_25]
    for i, event in enumerate(stream):
        if type(event) is Quote:
            t0 = clock()
            values = engine.on_quote(event.ts_ns, event.bid, event.bid_qty, event.ask, event.ask_qty)
            dt = clock() - t0
            if i >= start:
                feature_ns.append(dt)
                rows.append(values[columns])
        else:
            engine.on_trade(event.ts_ns, event.price, event.qty, event.side)
    compiled = ensemble_runtime.compiled
    ring, state = compiled.new_ring()
    X = np.ascontiguousarray(np.nan_to_num(np.array(rows)))
    model_ns = []
    for x in X:
        t0 = clock()
        compiled.proba_tick_in(x, ring, state)
        model_ns.append(clock() - t0)
    return {"features_39": percentiles(np.array(feature_ns)), "ensemble_proba_tick_in": percentiles(np.array(model_ns))}


def mean_ns(call, n: int = 1_000_000) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        call()
    return round((time.perf_counter_ns() - t0) / n, 1)


def hot_path_extras(runtime: ModelRuntime, X_train: np.ndarray) -> dict:
    telemetry = Telemetry([SYMBOL])
    recent = RecentTicks()
    watcher = ChampionWatcher(SYMBOL, TrackingConfig(), recent=recent)
    server = ControlServer(telemetry.health, telemetry.exposition, token="x")
    quote = Quote(SYMBOL, 1, 100.0, 1.0, 100.01, 1.0)
    drift10 = DriftMonitor(reference_bins(X_train, MODEL_25), runtime.names, every=10)
    drift1 = DriftMonitor(reference_bins(X_train, MODEL_25), runtime.names, every=1)
    values = np.ascontiguousarray(np.nan_to_num(runtime.features.values))
    hit = HitRate()
    ts = [0]

    def observe_hit():
        ts[0] += 100_000_000
        hit.observe(ts[0], 100.0, 0.6)

    loop = mean_ns(lambda: None)
    clock = time.perf_counter_ns
    out = {
        "empty_lambda_loop_ns": loop,
        "telemetry_tick_ns": mean_ns(lambda: telemetry.tick(1000, 6000)),
        "telemetry_tick_with_two_perf_counter_ns": mean_ns(lambda: telemetry.tick(clock(), clock())),
        "recent_append_ns": mean_ns(lambda: recent.append(quote), 200_000),
        "swap_ready_nothing_offered_ns": mean_ns(watcher.swap_ready),
        "control_pending_empty_ns": mean_ns(server.pending),
        "drift_observe_every_10_ns": mean_ns(lambda: drift10.observe(values)),
        "drift_observe_every_row_ns": mean_ns(lambda: drift1.observe(values), 200_000),
        "hit_rate_observe_ns": mean_ns(observe_hit, 200_000),
        "note": "mean per call including the lambda loop's own cost (empty_lambda_loop_ns)",
    }
    server.stop()
    return out


def swap_under_load(ensemble: Ensemble, stream: list, start: int, pace_us: float,
                    switch_interval_ms: float | None) -> dict:  # fmt: skip
    """Trade at ``pace_us`` per tick while the watcher loads a newly promoted champion."""
    import mlflow

    from pipeline.training import aliases, tracking
    from pipeline.training.registry import log_ensemble, model_name, register_challenger

    home = tempfile.mkdtemp(prefix="autoscalp-bench-")
    os.environ["AUTOSCALP_HOME"] = home
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    _, experiment_id = tracking.connect(TrackingConfig())
    with mlflow.start_run(experiment_id=experiment_id) as run, tempfile.TemporaryDirectory() as tmp:
        directory = ensemble.save(Path(tmp) / "ensemble")
        info = log_ensemble(directory, ensemble, np.zeros((2, len(MODEL_25))), {})
        version = register_challenger(info.model_uri, SYMBOL, {"autoscalp.sampling": f"quote/{STRIDE}"},
                                      run.info.run_id).version  # fmt: skip
    recent = RecentTicks(maxlen=len(stream))
    runtime = ModelRuntime(ROLES, compiled_ensemble(ensemble), STRIDE)
    watcher = ChampionWatcher(SYMBOL, TrackingConfig(), poll_s=0.2, recent=recent, current=runtime)
    for event in stream[:start]:
        recent.append(event)
        runtime.update(event)
    clock = time.perf_counter_ns
    pace_ns = int(pace_us * 1e3)

    def trade(events, until=None) -> tuple[list[int], int]:
        nonlocal runtime
        ns, i = [], 0
        for i, event in enumerate(events):
            due = clock() + pace_ns
            new = watcher.swap_ready()
            if new is not None:
                runtime = new
            recent.append(event)
            t0 = clock()
            if type(event) is Quote:
                runtime.on_quote(event)
            else:
                runtime.on_trade(event)
            ns.append(clock() - t0)
            if until is not None and until():
                break
            wait = due - clock()
            if wait > 0:
                time.sleep(wait / 1e9)  # waiting for the next tick releases the GIL, as a socket read does
        return ns, i + 1

    if switch_interval_ms is not None:
        sys.setswitchinterval(switch_interval_ms / 1e3)
    idle, used = trade(stream[start:start + 20_000])
    watcher.start()
    aliases.promote(model_name(SYMBOL), version)
    t0 = time.perf_counter()
    loading, _ = trade(stream[start + used:], until=lambda: watcher.last_swap is not None)
    seconds = time.perf_counter() - t0
    watcher.stop()
    sys.setswitchinterval(0.005)
    return {"pace_us": pace_us, "switch_interval_ms": switch_interval_ms or 5.0,
            "idle": percentiles(np.array(idle)), "while_loading": percentiles(np.array(loading)),
            "swap_after_s": round(seconds, 2), "swapped": watcher.last_swap is not None,
            "alert": watcher.alert}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=300_000)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--pace-us", type=float, default=200.0)
    parser.add_argument("--switch-interval-ms", type=float, default=None,
                        help="the interpreter's GIL switch interval during the swap test (default 5 ms)")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "runtime.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    results = {**provenance(), "features": {"roles": len(ROLES), "model": len(MODEL_25)}, "stride": STRIDE}
    events = synthetic_events(SyntheticSourceConfig(seed=11, ticks=args.ticks), SYMBOL)
    stream = market_events(events)
    t0 = time.perf_counter()
    ensemble, X_train = fit_ensemble(events, args.train_rows)
    results["fit_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    runtime = ModelRuntime(ROLES, compiled_ensemble(ensemble), STRIDE)
    results["runtime_build_s"] = round(time.perf_counter() - t0, 2)
    results["models"] = {"forest_nodes": int(len(runtime.compiled.arrays["forest"]["nodes"])),
                         "xgb_trees": int(len(runtime.compiled.arrays["xgb"]["roots"])),
                         "lstm": ensemble.members["lstm"].params.get("window")}  # fmt: skip
    start = len(stream) // 2
    on_quote = time_on_quote(runtime, stream, start)
    results["runtime_on_quote"] = on_quote
    results |= time_parts(runtime, stream, start)
    timer = np.empty(100_000, dtype=np.int64)
    for i in range(len(timer)):
        t = time.perf_counter_ns()
        timer[i] = time.perf_counter_ns() - t
    results["timer_overhead_p50_us"] = round(float(np.median(timer)) / 1e3, 3)
    results["hot_path_extras"] = hot_path_extras(runtime, X_train)
    results["swap_under_load"] = swap_under_load(ensemble, stream, start, args.pace_us,
                                                args.switch_interval_ms)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
