"""Tick-to-decision latency per stage, on replayed real ticks; the libraries' path beside it.

Not a test: run it (`.venv/bin/python bench/latency.py [--json]`) and it records what it measured in
bench/results/latency.json, with the machine, the git revision and the load. One thread.

- data: the Binance USD-M BTCUSDT capture of ../shared/data (trades + book ticker, 87,402 events,
  66,089 quotes) replayed --laps times, each lap's timestamps shifted after the previous one (as
  the daemon's looped replay does); the role features need ~3 laps to be warm, so the default 6
  laps give > 100k warm quotes. Without the data: the seeded simulator, said so in ``data``.
- model: bench_runtime's ensemble (its 25 model features + the engine's 14 role features, forest
  100 trees depth 8, XGBoost 200 rounds depth 5 (the most the product's default allows, early
  stopping off), LSTM hidden 32 with its state carried, logistic regression; isotonic
  calibration) fitted on the simulator's ticks; ``--xgb-rounds``: the whole path again with
  XGBoost at other sizes (500: the default before it was capped).
- stages, per quote where the model answered (``ok``), p50/p99/p99.9/max in us:
  ``features`` (FeatureEngine.on_quote, 39 features) and ``ensemble`` (the row gathered, one
  compiled call with the quote's phase ring) timed alone over the same quotes (bench_runtime's
  ``time_parts``); ``runtime`` (ModelRuntime.on_quote: both, one compiled call once warm),
  ``engine`` (Engine.on_tick: regime, leverage, strategy, risk) and ``whole`` (runtime + engine,
  one clock around both, as the daemon's histogram times it) timed in one pass with the paper
  broker filling the engine's orders (its file not fsynced per commit, as a paper daemon's) and
  the model rewarmed after its writes, as the daemon does.
- after writes: the quotes right after a paper-venue write against the others; and the whole
  pass again with the venue fsyncing every commit, as a live daemon's journal does (``fsync_per_write``),
  with and without the rewarm.
- library: on --library-ticks consecutive warm quotes, the ensemble through the libraries one
  row at a time (``predict_proba`` of scikit-learn and XGBoost, torch's LSTM one step on the
  phase's carried state), and the whole path with it (features + library ensemble + engine on
  the same quotes).
- daemon: the Daemon as ``autoscalp serve`` builds it (champion registered in a temporary MLflow
  home, paper broker, journal, telemetry) fed the same events through its ``_on_event``; its
  Prometheus histogram's quantiles beside this benchmark's, and this benchmark's samples counted
  in the same buckets.
- gc (``--gc``, ``--gc-compare``): the timed loops run with the cyclic collector as ``Daemon.run``
  sets it (``daemon``: serving.daemon.gc_policy.settle_gc, start-up objects frozen and young collections
  rare), and the whole path again with it ``off`` and at Python's ``default``; the collections that
  ran inside each loop are counted (the explicit young one at its start included). ``full_collect_ms``:
  one full collection in this process before and after the freeze, the pause it would put on a tick.
- backtest: bench_backtest's ``measure`` on the capture tiled x--backtest-repeat: events/s with the
  full decision path (features, compiled batch P(up), engine, venue) and replay-only (no model).
- lstm_state: the LSTM fitted both ways on the same rows (carried state vs. a 16-row window from a
  zero state), out-of-sample AUC and log-loss, and each one's compiled cost per tick.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import numpy as np  # noqa: E402

from bench_runtime import MODEL_25, ROLES, STRIDE, SYMBOL, fit_ensemble, percentiles, time_parts  # noqa: E402
from latency_compare import backtest_throughput, library_path, lstm_state_quality  # noqa: E402
from provenance import provenance  # noqa: E402

from pipeline.config import SyntheticSourceConfig  # noqa: E402
from pipeline.features.check import synthetic_events  # noqa: E402
from pipeline.features.events import EventArrays  # noqa: E402
from serving.events import MarketLimits, Quote  # noqa: E402
from serving.feeds.replay import stream_events  # noqa: E402
from serving.runtime.model import ModelRuntime, compiled_ensemble  # noqa: E402
from serving.daemon.gc_policy import restore_gc, settle_gc  # noqa: E402
from serving.runtime.telemetry import LATENCY_BUCKETS_US, latency_quantile_us  # noqa: E402

CAPTURE = "binance_ws_raw/usdm_btcusdt_20240808.gz"
GC_MODES = ("daemon", "off", "default")
PYTHON_GC = gc.get_threshold()
LAP_GAP_NS = 1_000_000
NAN = math.nan


def shared_data() -> Path | None:
    for candidate in (os.environ.get("AUTOSCALP_SHARED_DATA"), BENCH.parent.parent / "shared" / "data",
                      "/work/shared/data"):  # fmt: skip
        if candidate and (Path(candidate) / CAPTURE).is_file():
            return Path(candidate)
    return None


def replay_stream(laps: int) -> tuple[list, dict]:
    """The real capture ``laps`` times over (shifted timestamps), or the simulator without it."""
    root = shared_data()
    if root is None:
        events = synthetic_events(SyntheticSourceConfig(seed=23, ticks=150_000 * laps), SYMBOL)
        return [e for _, e in stream_events(SYMBOL, events)], {
            "source": "synthetic (../shared/data absent: NOT real ticks)", "laps": 1}
    from bench_serve import load_capture

    events: EventArrays = load_capture(root / CAPTURE)
    span = int(events.ts_ns[-1] - events.ts_ns[0]) + LAP_GAP_NS
    stream = [e for lap in range(laps) for _, e in stream_events(SYMBOL, events, shift_ns=lap * span)]
    return stream, {"source": f"real: ../shared/data/{CAPTURE}", "events_per_lap": len(events), "laps": laps}


def limits() -> MarketLimits:
    from flows.config import ProductConfig
    from serving.daemon.build import market_limits

    config = ProductConfig()
    return market_limits(SYMBOL, config.backtest, config.venue)


@contextlib.contextmanager
def gc_mode(mode: str):  # noqa: ANN201
    """The cyclic collector during a timed loop: ``daemon`` as ``Daemon.run`` sets it (settle_gc:
    start-up frozen, young collections rare), ``off`` disabled, ``default`` as Python ships. Yields
    a list that gets the collections per generation that ran inside."""
    restore_gc(PYTHON_GC)  # from Python's defaults, whatever ran before (Daemon.start settles it too)
    before = [s["collections"] for s in gc.get_stats()]
    ran: list[int] = []
    if mode == "daemon":
        settle_gc()
    else:
        gc.collect(1)
    if mode == "off":
        gc.disable()
    try:
        yield ran
    finally:
        ran += [s["collections"] - b for s, b in zip(gc.get_stats(), before)]
        gc.enable()
        restore_gc(PYTHON_GC)


def full_collect_ms() -> dict:
    """One full collection's pause in this process (the serve process holds about as much: torch,
    MLflow, the model), before and after gc.freeze; the freeze is undone after."""
    out = {}
    for label in ("unfrozen", "frozen"):
        gc.collect()  # settle what is garbage now, then time a collection with nothing to free
        t0 = time.perf_counter()
        gc.collect()
        out[label] = round((time.perf_counter() - t0) * 1e3, 2)
        gc.freeze()
    gc.unfreeze()
    return out | {"tracked_objects": len(gc.get_objects())}


def whole_path(runtime: ModelRuntime, stream: list, home: Path, gc_policy: str = "daemon", rewarm: bool = True,
               fsync: bool = False) -> dict:  # fmt: skip
    """One pass as the daemon runs a tick: the broker sees the event, then (timed) runtime + engine,
    then the orders go to the paper broker and its fills back to the engine (not timed), and after
    the broker's writes the model is rewarmed (``ModelRuntime.rewarm``) unless ``rewarm`` is off.
    ``fsync``: the paper venue fsyncs each commit, as a live daemon's journal does (the paper
    daemon's files do not: serving/state/db.py)."""
    from flows.config import ProductConfig
    from serving.brokers.paper import PaperBroker
    from serving.engine import Engine
    from serving.events import Fill, OrderDone

    config = ProductConfig()
    market = limits()
    broker = PaperBroker(home / "paper.sqlite", config.venue, [market], config.backtest.equity_usdt, durable=fsync)
    engine = Engine(config.engine, runtime.names, [market], config.backtest.equity_usdt)
    clock, clock_ns, next_clock = time.perf_counter_ns, 100_000_000, 0
    t_runtime, t_engine, t_whole, ok_rows, counts = [], [], [], [], {"orders": 0, "fills": 0, "quotes": 0}
    wrote, after_write = [False], []  # the paper venue committed (fsync) since the last timed quote

    def deliver(events) -> None:  # noqa: ANN001
        for event in events or ():
            if type(event) is Fill:
                counts["fills"] += 1
                send(engine.on_fill(event), event.ts_ns)
            elif type(event) is OrderDone:
                send(engine.on_order_done(event), event.ts_ns)
        if events:
            wrote[0] = True
        if events and rewarm:
            runtime.rewarm()  # as the daemon does after the venue's writes (Daemon._deliver)

    def send(record, ts) -> None:  # noqa: ANN001
        if record is not None and (record.orders or record.cancels):
            counts["orders"] += len(record.orders)
            events = broker.submit(record, ts)
            deliver(events)
            wrote[0] = True
            if rewarm and not events:
                runtime.rewarm()  # (Daemon._send; deliver rewarmed otherwise)

    with gc_mode(gc_policy) as collections:
        for event in stream:
            ts = event.ts_ns
            deliver(broker.on_market(event))
            if type(event) is Quote:
                t0 = clock()
                vector, p_up, ok = runtime.on_quote(event)
                t1 = clock()
                record = engine.on_tick(event, vector, p_up, NAN, ok)
                t2 = clock()
                counts["quotes"] += 1
                if ok:
                    t_runtime.append(t1 - t0)
                    t_engine.append(t2 - t1)
                    t_whole.append(t2 - t0)
                    ok_rows.append(counts["quotes"] - 1)
                    after_write.append(wrote[0])
                wrote[0] = False
                send(record, ts)
            else:
                runtime.on_trade(event)
                send(engine.on_trade(event), ts)
            if ts >= next_clock:
                send(engine.on_clock(ts), ts)
                deliver(broker.poll(ts))
                next_clock = ts + clock_ns
    broker.close()
    return {"runtime": np.array(t_runtime), "engine": np.array(t_engine), "whole": np.array(t_whole),
            "ok_quotes": np.array(ok_rows), "after_write": np.array(after_write, dtype=bool),
            "counts": counts | {"kill_switch": engine.kill.state}, "gc_collections": collections}


def after_writes(run: dict) -> dict:
    """The quotes that came right after a paper-venue write (SQLite commit, fsync) against the rest."""
    flag = run["after_write"]
    return {"share": round(float(flag.mean()), 5), "all": stage(run["whole"]),
            "after_a_write": {k: stage(run[k][flag]) for k in ("runtime", "engine", "whole")},
            "others": {k: stage(run[k][~flag]) for k in ("runtime", "engine", "whole")}}  # fmt: skip


def daemon_histogram(ensemble, stream: list, home: Path, gc_policy: str = "daemon") -> dict:  # noqa: ANN001
    """The daemon as ``autoscalp serve`` assembles it, fed ``stream`` through ``_on_event`` on this
    thread (the feed's thread is left out: its GIL hand-overs are the feed's cost, not the
    decision's); the telemetry's bucket counts over the quotes after the runtime is warm."""
    import mlflow

    from flows.config import ProductConfig
    from pipeline.config import TrackingConfig
    from pipeline.training import aliases, tracking
    from pipeline.training.registry import log_ensemble, model_name, register_challenger
    from serving.daemon.build import build_daemon

    os.environ["AUTOSCALP_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    _, experiment = tracking.connect(TrackingConfig())
    with mlflow.start_run(experiment_id=experiment) as run, tempfile.TemporaryDirectory() as tmp:
        info = log_ensemble(ensemble.save(Path(tmp) / "ensemble"), ensemble, np.zeros((2, len(MODEL_25))), {})
        tags = {"autoscalp.sampling": f"quote/{STRIDE}", "autoscalp.oos_auc": "0.6"}
        version = register_challenger(info.model_uri, SYMBOL, tags, run.info.run_id).version
    aliases.promote(model_name(SYMBOL), version)
    config = ProductConfig.model_validate({"data": {"store_dir": str(home / "store")}})
    serve = config.serve.model_copy(update={"http_port": 0, "model_poll_s": 3600.0})
    daemon = build_daemon(config, serve, SYMBOL)
    if daemon.watcher.serving is None:
        raise RuntimeError(f"the champion did not load: {daemon.watcher.status()}")
    daemon.feed = _NoFeed()
    daemon.start(stream[0].ts_ns)
    clock_ns, next_clock, warm_at = serve.clock_ms * 1_000_000, 0, None
    try:
        with gc_mode(gc_policy) as collections:  # as Daemon.run, which calls start() then settle_gc()
            for event in stream:
                daemon._on_event(event)
                if warm_at is None and daemon.runtime.last_ok:
                    warm_at = list(daemon.telemetry._buckets)
                ts = event.ts_ns
                if ts >= next_clock:
                    daemon._handle(daemon.engine.on_clock(ts), ts)
                    daemon._deliver(daemon.broker.poll(ts), ts)
                    next_clock = ts + clock_ns
    finally:
        end = list(daemon.telemetry._buckets)
        daemon.request_stop("bench done")
        daemon.shutdown()
        if daemon.control is not None:
            daemon.control.stop()
    counts = [b - a for a, b in zip(warm_at or [0] * len(end), end)]
    return {"counts": counts, "stats": {"quotes": daemon.stats.quotes, "orders": daemon.stats.orders,
                                        "fills": daemon.stats.fills}, "gc_collections": collections}  # fmt: skip


class _NoFeed:
    """The daemon's feed when the bench hands it events itself."""

    done, error = False, ""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def stats(self) -> dict:
        return {"queue_depth": 0, "conflated": 0}


def bucket_counts(ns: np.ndarray) -> list[int]:
    bounds = np.array(LATENCY_BUCKETS_US) * 1000
    return np.bincount(np.searchsorted(bounds, ns, side="left"), minlength=len(bounds) + 1).tolist()


def histogram_quantiles(counts: list[int]) -> dict:
    return {f"p{q}": round(latency_quantile_us(counts, q / 100), 2) for q in (50, 90, 99, 99.9)}


def stage(ns: np.ndarray) -> dict:
    p = percentiles(ns)
    return {k: p[k] for k in ("p50_us", "p99_us", "p999_us", "max_us", "mean_us", "calls")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the summary, as JSON")
    parser.add_argument("--laps", type=int, default=6)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--library-ticks", type=int, default=3000)
    parser.add_argument("--backtest-repeat", type=int, default=20)
    parser.add_argument("--xgb-rounds", type=int, nargs="*", default=[500, 100],
                        help="also time the whole path with ensembles whose XGBoost has these rounds")
    parser.add_argument("--gc", choices=GC_MODES, default="daemon",
                        help="the collector in the timed loops (daemon: as Daemon.run sets it)")
    parser.add_argument("--gc-compare", nargs="*", choices=GC_MODES, default=["off", "default"],
                        help="also time the whole path with the collector set these ways")
    parser.add_argument("--skip", nargs="*", default=[], choices=["library", "daemon", "backtest", "lstm_state"])
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "latency.json")
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):  # --json: stdout is the summary
        results = run(args)
    print(json.dumps(results["summary"]) if args.json else json.dumps(results, indent=2))


def run(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(1)
    say = print
    results = {**provenance(), "uptime_load_before": list(os.getloadavg()), "stride": STRIDE,
               "features": {"roles": len(ROLES), "model": len(MODEL_25)}}  # fmt: skip
    t0 = time.perf_counter()
    ensemble, _ = fit_ensemble(synthetic_events(SyntheticSourceConfig(seed=11, ticks=300_000), SYMBOL), args.train_rows)
    results["fit_s"] = round(time.perf_counter() - t0, 1)
    stream, results["data"] = replay_stream(args.laps)
    t0 = time.perf_counter()
    runtime = ModelRuntime(ROLES, compiled_ensemble(ensemble), STRIDE)
    results["runtime_build_s"] = round(time.perf_counter() - t0, 2)
    arrays = runtime.compiled.arrays
    results["models"] = {"forest_trees": len(arrays["forest"]["roots"]), "forest_nodes": len(arrays["forest"]["nodes"]),
                         "xgb_trees": len(arrays["xgb"]["roots"]), "xgb_nodes": len(arrays["xgb"]["nodes"]),
                         "lstm": {k: ensemble.members["lstm"].params[k] for k in ("state", "window", "hidden", "layers")}}  # fmt: skip
    home = Path(tempfile.mkdtemp(prefix="autoscalp-latency-"))
    say(f"{len(stream)} events; timing the whole path ...")
    whole = whole_path(runtime, stream, home, args.gc)
    quotes = sum(type(e) is Quote for e in stream)
    if not len(whole["whole"]):
        raise SystemExit(f"no quote where the model answered in {len(stream)} events: more --laps")
    quote_events = [i for i, e in enumerate(stream) if type(e) is Quote]
    start_event = quote_events[int(whole["ok_quotes"][0])]  # the parts are timed from the first ok quote on
    parts = time_parts(ModelRuntime(ROLES, runtime.compiled, STRIDE), stream, start_event)
    results["ticks"] = {"events": len(stream), "quotes": quotes, "ok_quotes_timed": len(whole["whole"]),
                        "engine": whole["counts"]}  # fmt: skip
    results["stages"] = {"features": {k: v for k, v in parts["features_39"].items()},
                         "ensemble": {k: v for k, v in parts["ensemble_proba_tick_in"].items()},
                         "runtime_on_quote": stage(whole["runtime"]), "engine_decision": stage(whole["engine"]),
                         "whole_path": stage(whole["whole"])}  # fmt: skip
    results["gc"] = {args.gc: {"whole_path": results["stages"]["whole_path"], "collections": whole["gc_collections"]},
                     "full_collect_ms": full_collect_ms()}  # fmt: skip
    for mode in (m for m in args.gc_compare if m != args.gc):
        say(f"the whole path with the collector {mode} ...")
        (home / f"gc-{mode}").mkdir(exist_ok=True)
        other = whole_path(ModelRuntime(ROLES, runtime.compiled, STRIDE), stream, home / f"gc-{mode}", mode)
        results["gc"][mode] = {"whole_path": stage(other["whole"]), "collections": other["gc_collections"]}
    results["after_writes"] = after_writes(whole)
    say("the whole path with an fsync per write (a live journal's), with and without the rewarm ...")
    results["fsync_per_write"] = {}
    for label, rewarm in (("rewarm", True), ("no_rewarm", False)):
        (home / f"fsync-{label}").mkdir(exist_ok=True)
        synced = whole_path(ModelRuntime(ROLES, runtime.compiled, STRIDE), stream, home / f"fsync-{label}", args.gc,
                            rewarm=rewarm, fsync=True)  # fmt: skip
        results["fsync_per_write"][label] = after_writes(synced)
    results["target"] = {"p50_us": 10.0, "p99_us": 20.0,
                         "met": results["stages"]["whole_path"]["p50_us"] <= 10.0
                         and results["stages"]["whole_path"]["p99_us"] <= 20.0}  # fmt: skip
    if args.xgb_rounds:
        say("the whole path with fewer XGBoost rounds ...")
        results["by_xgb_rounds"] = [{"xgb_trees": len(arrays["xgb"]["roots"]),
                                     **{k: results["stages"][k] for k in ("ensemble", "whole_path")}}]  # fmt: skip
        for rounds in args.xgb_rounds:
            smaller, _ = fit_ensemble(synthetic_events(SyntheticSourceConfig(seed=11, ticks=300_000), SYMBOL),
                                      args.train_rows, xgb_rounds=rounds)  # fmt: skip
            (home / f"x{rounds}").mkdir(exist_ok=True)
            run_ = whole_path(ModelRuntime(ROLES, compiled_ensemble(smaller), STRIDE), stream, home / f"x{rounds}",
                              args.gc)  # fmt: skip
            results["by_xgb_rounds"].append({"xgb_trees": rounds, "whole_path": stage(run_["whole"]),
                                             "runtime_on_quote": stage(run_["runtime"])})  # fmt: skip
    if "library" not in args.skip:
        say("library path ...")
        lib = library_path(ensemble, runtime, stream, whole["ok_quotes"], args.library_ticks)
        a, b = lib["block"]
        where = np.searchsorted(whole["ok_quotes"], np.arange(a, b))
        where = where[(where < len(whole["ok_quotes"])) & (whole["ok_quotes"][np.minimum(where, len(whole["ok_quotes"]) - 1)] >= a)]
        n = min(len(where), len(lib["ensemble_ns"]))
        feats = parts["features_39"]["p50_us"] * 1000
        results["library"] = {
            "ticks": int(len(lib["ensemble_ns"])),
            "ensemble": stage(lib["ensemble_ns"]),
            "whole_path_with_library_ensemble": stage(feats + lib["ensemble_ns"][:n] + whole["engine"][where[:n]]),
            "note": "whole = the features' median + the library ensemble + the engine on the same quotes",
            "max_abs_p_up_gap_vs_compiled": lib["max_abs_p_up_gap_vs_compiled"],
        }
    if "daemon" not in args.skip:
        say("the daemon's histogram ...")
        daemon = daemon_histogram(ensemble, stream, home / "daemon", args.gc)
        mine = bucket_counts(whole["whole"])
        results["daemon_histogram"] = {
            "buckets_us": list(LATENCY_BUCKETS_US),
            "daemon": histogram_quantiles(daemon["counts"]) | {"decisions": sum(daemon["counts"])},
            "bench_in_the_same_buckets": histogram_quantiles(mine) | {"decisions": sum(mine)},
            "bench_exact": {"p50": results["stages"]["whole_path"]["p50_us"], "p99": results["stages"]["whole_path"]["p99_us"]},
            "daemon_counts": daemon["counts"], "bench_counts": mine, "daemon_stats": daemon["stats"],
            "gc": args.gc, "gc_collections": daemon["gc_collections"],
        }  # fmt: skip
    if "lstm_state" not in args.skip:
        say("the LSTM both ways ...")
        results["lstm_state"] = lstm_state_quality(args.train_rows)
    if "backtest" not in args.skip:
        say("backtest throughput ...")
        root = shared_data()
        results["backtest"] = backtest_throughput(ensemble, root / CAPTURE if root else None, args.backtest_repeat)
    results["uptime_load_after"] = list(os.getloadavg())
    whole_stage = results["stages"]["whole_path"]
    summary = {"p50_us": whole_stage["p50_us"], "p99_us": whole_stage["p99_us"], "p999_us": whole_stage["p999_us"],
               "max_us": whole_stage["max_us"], "ticks": whole_stage["calls"], "data": results["data"]["source"],
               "target_met": results["target"]["met"],
               "stages_p50_p99_us": {k: [v["p50_us"], v["p99_us"]] for k, v in results["stages"].items()},
               "load": results["uptime_load_before"]}  # fmt: skip
    if "daemon_histogram" in results:
        summary["daemon_histogram_p50_p99_us"] = [results["daemon_histogram"]["daemon"]["p50"],
                                                  results["daemon_histogram"]["daemon"]["p99"]]  # fmt: skip
    results["summary"] = summary
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
