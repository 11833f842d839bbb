"""Feature extraction speed: batch throughput and online per-tick latency.

Not a test: run it (`make bench`) and it records what it measured in bench/results/features.json,
with the machine and the git revision. Batch figures are the best of --repeat runs.

  batch_all : every candidate (1476) over --events synthetic events (trades + quotes), one
              program, values emitted every 1000th event (the work is the same at every event);
              the simulator has no depth, so the 192 depth features cost only being skipped
  batch_25  : the 25-feature selection below, values at every event, events/s
  online_25 : the same 25 through FeatureEngine.on_quote / on_trade, one Python call per tick as
              the daemon makes it; per-call latency percentiles in us (perf_counter_ns around
              the call; the timer's own cost is reported and not subtracted)
  online_25_via_dispatcher: the same calls through numba's dispatcher, as before the engine
              pre-bound the compiled step (for comparison)
  depth_real: on the real USD-M BTC capture (--raw; skipped when absent): the L2 book replay
              (updates/s), the 192 depth features in batch (ns per feature per depth update) and
              FeatureEngine.on_depth per raw update (book + 192 features), latency in us
  max_rss_mb: peak resident memory after each stage (it only grows)

Targets (issue 3): online_25 p99 <= 5 us; batch_all over 1M ticks <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from provenance import provenance  # noqa: E402

import pyarrow as pa  # noqa: E402

from pipeline.config import SyntheticSourceConfig  # noqa: E402
from pipeline.data.schemas import DEPTH, Kind  # noqa: E402
from pipeline.data.sources.files import FileSource  # noqa: E402
from pipeline.features.catalog import catalog, compile_program  # noqa: E402
from pipeline.features.check import synthetic_events  # noqa: E402
from pipeline.features.core import KIND_DEPTH, KIND_QUOTE, KIND_TRADE  # noqa: E402
from pipeline.features.engine import FeatureEngine, run_program  # noqa: E402
from pipeline.features.events import depth_updates, events_from_batches, replay_depth  # noqa: E402
from pipeline.features.step import step  # noqa: E402

# The engine's roles plus time windows, z-scores and book/trade features a model would pick.
SELECTION_25 = (
    "rv_tick_50", "rv_tick_1000", "atr_tick_100", "rsi_tick_100", "bbz_tick_200", "vwapdev_tick_200",
    "volspike_tick_50", "momstr_tick_100", "ofi_tick_100", "bookimb_l1", "spreadrel_l1", "effratio_tick_200",
    "trend_tick_200", "tickvol_tick_100", "rv_time_5s", "ofi_time_1s", "tsi_time_10s", "traderate_time_5s",
    "vwapdev_time_30s", "ret_tick_20", "microdev_l1", "rv_tick_50_z2000", "ofi_tick_100_z2000",
    "spreadrel_l1_z2000", "sincelarge_x5",
)  # fmt: skip
SYMBOL = "BTC/USDT:USDT"
DEFAULT_RAW = BENCH.parent.parent / "shared" / "data" / "binance_ws_raw" / "usdm_btcusdt_20240808.gz"


def rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_batch(events, names: tuple[str, ...], emit_every: int, repeat: int) -> dict:
    program = compile_program(names)
    emit = np.arange(emit_every - 1, len(events), emit_every, dtype=np.int64)
    seconds = best_of(lambda: run_program(program, events, emit), repeat)
    return {
        "features": len(names),
        "events": len(events),
        "rows_emitted": len(emit),
        "seconds": round(seconds, 2),
        "events_per_s": round(len(events) / seconds),
        "ns_per_feature_event": round(seconds / len(events) / len(names) * 1e9, 1),
        "max_rss_mb": rss_mb(),
    }


def via_dispatcher(engine: FeatureEngine):
    """on_quote / on_trade as they were before the engine pre-bound step's compiled entry point:
    through numba's dispatcher, which resolves the types of all 16 arguments on every call."""
    args = (engine._iprog, engine._fprog, engine._state, engine._core, engine._clock)
    nan = float("nan")
    none = np.empty(0)  # no depth summary

    def on_quote(ts_ns, bid, bid_qty, ask, ask_qty):
        step(*args, ts_ns, KIND_QUOTE, nan, nan, 0.0, bid, bid_qty, ask, ask_qty, none, engine.values)
        return engine.values

    def on_trade(ts_ns, price, qty, side):
        step(*args, ts_ns, KIND_TRADE, price, qty, side, nan, nan, nan, nan, none, engine.values)
        return engine.values

    return on_quote, on_trade


def bench_online(events, names: tuple[str, ...], dispatcher: bool = False) -> dict:
    engine = FeatureEngine(names)
    latency = np.empty(len(events), dtype=np.int64)
    clock = time.perf_counter_ns
    on_quote, on_trade = via_dispatcher(engine) if dispatcher else (engine.on_quote, engine.on_trade)
    gc.disable()  # the daemon's hot loop allocates nothing; a collection here measures the benchmark
    try:
        i = 0
        for lo in range(0, len(events), 100_000):  # Python scalars, as a feed delivers them
            rows = zip(*(column.tolist() for column in events.slice(lo, lo + 100_000).columns()))
            for ts_ns, kind, price, qty, side, bid, bid_qty, ask, ask_qty in rows:
                if kind == KIND_QUOTE:
                    start = clock()
                    on_quote(ts_ns, bid, bid_qty, ask, ask_qty)
                    latency[i] = clock() - start
                else:
                    start = clock()
                    on_trade(ts_ns, price, qty, side)
                    latency[i] = clock() - start
                i += 1
    finally:
        gc.enable()
    timer = np.empty(100_000, dtype=np.int64)
    for i in range(len(timer)):
        start = clock()
        timer[i] = clock() - start
    us = latency / 1e3
    return {
        "features": len(names),
        "ticks": len(events),
        "p50_us": round(float(np.percentile(us, 50)), 3),
        "p99_us": round(float(np.percentile(us, 99)), 3),
        "p999_us": round(float(np.percentile(us, 99.9)), 3),
        "max_us": round(float(us.max()), 1),
        "mean_us": round(float(us.mean()), 3),
        "timer_overhead_p50_us": round(float(np.percentile(timer, 50)) / 1e3, 3),
        "max_rss_mb": rss_mb(),
    } | ({} if dispatcher else {"warm_at_end": engine.warm})


def bench_depth(path: Path, repeat: int) -> dict:
    batches = list(FileSource(path).batches())
    rows = pa.concat_tables(b.rows.select(DEPTH.names) for b in batches if b.kind == Kind.DEPTH)
    updates = depth_updates(rows)
    replay_s = best_of(lambda: replay_depth(updates), repeat)
    events = events_from_batches(batches)
    names = tuple(n for n, spec in catalog().items() if spec.family.is_depth)
    program = compile_program(names)
    depth_events = int((events.kind == KIND_DEPTH).sum())
    last = np.array([len(events) - 1])
    batch_s = best_of(lambda: run_program(program, events, last), repeat)
    engine = FeatureEngine(names)
    latency = np.empty(len(updates), dtype=np.int64)
    clock = time.perf_counter_ns
    for i, update in enumerate(updates):
        start = clock()
        engine.on_depth(update)
        latency[i] = clock() - start
    us = latency[100:] / 1e3
    return {
        "file": path.name,
        "updates": len(updates),
        "level_rows": rows.num_rows,
        "replay_s": round(replay_s, 3),
        "replay_updates_per_s": round(len(updates) / replay_s),
        "depth_features": len(names),
        "events": len(events),
        "depth_events": depth_events,
        "batch_s": round(batch_s, 3),
        "ns_per_feature_depth_event": round(batch_s / depth_events / len(names) * 1e9, 1),
        "on_depth_p50_us": round(float(np.percentile(us, 50)), 1),
        "on_depth_p99_us": round(float(np.percentile(us, 99)), 1),
        "on_depth_max_us": round(float(us.max()), 1),
        "max_rss_mb": rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "features.json")
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="raw Binance capture with depth")
    args = parser.parse_args()

    results = {
        **provenance(),
        "repeat": args.repeat,
        "selection_25": list(SELECTION_25),
    }
    start = time.perf_counter()
    events = synthetic_events(SyntheticSourceConfig(ticks=args.events), SYMBOL)
    results["events"] = {"count": len(events), "quotes": int((events.kind == KIND_QUOTE).sum()),
                         "simulate_s": round(time.perf_counter() - start, 2), "max_rss_mb": rss_mb()}
    start = time.perf_counter()
    run_program(compile_program(SELECTION_25), events.slice(0, 1000))
    results["first_call_s"] = round(time.perf_counter() - start, 2)  # JIT compile or cache load

    results["batch_all"] = bench_batch(events, tuple(catalog()), 1000, args.repeat)
    print(json.dumps(results["batch_all"]), flush=True)
    results["batch_25"] = bench_batch(events, SELECTION_25, 1, args.repeat)
    print(json.dumps(results["batch_25"]), flush=True)
    results["online_25"] = bench_online(events, SELECTION_25)
    print(json.dumps(results["online_25"]), flush=True)
    results["online_25_via_dispatcher"] = bench_online(events, SELECTION_25, dispatcher=True)
    print(json.dumps(results["online_25_via_dispatcher"]), flush=True)
    if args.raw.is_file():
        results["depth_real"] = bench_depth(args.raw, args.repeat)
        print(json.dumps(results["depth_real"]), flush=True)
    results["targets"] = {
        "online_25_p99_le_5us": results["online_25"]["p99_us"] <= 5.0,
        "batch_all_1M_le_60s": results["batch_all"]["seconds"] * 1_000_000 / len(events) <= 60.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
