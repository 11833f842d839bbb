"""Backtest throughput: events per second through the whole decision path, and where the time goes.

Not a test: run it (`.venv/bin/python bench/bench_backtest.py`) and it records what it measured in
bench/results/backtest.json, with the machine and the git revision.

Two data sets, each replayed twice, with the full decision path (features, the ensemble, regime,
strategies, risk, the simulated venue with latency, queues, fees and margin) and with a trivial
model (P(up) = 0.5: no inference; the strategies on their own rules):

- ``synthetic``: 1M+ events of the seeded simulator; the ensemble is trained here first on the
  simulator's ticks of another seed, at production-like sizes (forest 100 trees depth 8, XGBoost
  200 trees depth 6, LSTM window 16 hidden 32, logistic regression);
- ``real``: Binance USD-M BTCUSDT trades + book ticker from ../shared/data (87,402 events) tiled x20
  with shifted timestamps, as ../shared/peers/nautilus_bench.py replays them (``--repeat 20``), for
  the throughput ratio to NautilusTrader. Pass ``--nautilus-json`` with that script's output line
  from the same machine to record the ratio.

Phases: ``signals`` (features at every quote + batched ensemble probabilities: pure functions of the
data, identical to tick-by-tick inference by tests) and ``loop`` (engine + venue per event). The
headline ``events_per_s`` is events / (signals + loop): everything after the data is in memory.
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

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from provenance import provenance  # noqa: E402

from flows.config import ProductConfig  # noqa: E402
from pipeline.config import QualityConfig, SyntheticSourceConfig  # noqa: E402
from pipeline.data.schemas import Kind  # noqa: E402
from pipeline.data.sources import build_source, plan_sources  # noqa: E402
from pipeline.data.ingest import ingest  # noqa: E402
from pipeline.data.sources.synthetic import SyntheticSource  # noqa: E402
from pipeline.data.store import TickStore  # noqa: E402
from pipeline.features.events import EventArrays  # noqa: E402
from serving.backtest.config import BacktestConfig  # noqa: E402
from serving.backtest.data import ReplayData, load_replay, store_range  # noqa: E402
from serving.backtest.runner import run_backtest  # noqa: E402
from serving.config import EngineConfig  # noqa: E402
from serving.venues.config import VenueConfig  # noqa: E402

SYMBOL = "BTC/USDT:USDT"
MODEL_FEATURES = (
    "ret_tick_20", "ret_tick_200", "rv_tick_50", "rv_tick_1000", "ofi_tick_100", "ofi_tick_1000", "bookimb_l1",
    "bookimb_tick_50", "spreadrel_l1", "microdev_l1", "rsi_tick_100", "bbz_tick_200", "vwapdev_tick_200",
    "momstr_tick_100", "trend_tick_200", "effratio_tick_200", "volspike_tick_50", "tickvol_tick_100",
    "atr_tick_100", "ret_tick_50", "ofi_tick_500", "rsi_tick_500", "bbz_tick_1000", "rv_tick_500", "trend_tick_1000",
)  # fmt: skip
SIZES = {
    "forest": {"n_estimators": 100, "max_depth": 8},
    "xgb": {"n_estimators": 200, "max_depth": 6, "learning_rate": 0.05, "early_stopping_rounds": 1_000},
    "lstm": {"window": 16, "hidden": 32, "max_epochs": 3, "patience": 2},
}
STRIDE = 10


def synthetic_replay(ticks: int, seed: int) -> ReplayData:
    store = TickStore(tempfile.mkdtemp(prefix="bench-bt-"))
    ingest(SyntheticSource(SyntheticSourceConfig(seed=seed, ticks=ticks), (SYMBOL,)), store, QualityConfig())
    first, last = store_range(store, "synthetic", SYMBOL)
    return load_replay(store, "synthetic", SYMBOL, first, last + 1, 0.0)


def train_ensemble(ticks: int):  # noqa: ANN201
    """An ensemble at production-like sizes on another seed's ticks (the skill is beside the point)."""
    from pipeline.models.base import make_model
    from pipeline.models.ensemble import Ensemble
    from serving.backtest.signals import feature_rows

    events = synthetic_replay(ticks, seed=101).events
    quote_index, values, warm = feature_rows(events, MODEL_FEATURES)
    rows = np.flatnonzero(warm)[::STRIDE]
    X = values[rows]
    mid = 0.5 * (events.bid[quote_index] + events.ask[quote_index])
    ahead = np.r_[mid[STRIDE * 12:], np.full(STRIDE * 12, np.nan)]  # the mid 120 quotes later
    y = (ahead[rows] > mid[rows]).astype(np.int64)
    split = int(len(X) * 0.8)
    members = {k: make_model(k, SIZES.get(k), seed=1).fit(X[:split], y[:split], X[split:], y[split:])
               for k in ("logistic", "forest", "lstm", "xgb")}  # fmt: skip
    return Ensemble(members, feature_names=MODEL_FEATURES)


def tiled_real(path: Path, repeat: int) -> ReplayData:
    """The capture's trades + quotes, tiled ``repeat`` times with shifted timestamps (as the peer does)."""
    store = TickStore(tempfile.mkdtemp(prefix="bench-bt-real-"))
    config = ProductConfig()
    for spec in plan_sources(config, "files", (str(path),), (), None):
        ingest(build_source(spec, config), store, config.quality)
    first, last = store_range(store, "binanceusdm", SYMBOL)
    one = load_replay(store, "binanceusdm", SYMBOL, first, last + 1, 0.0).events
    one, _ = one.ticks_only()  # trades + quotes, as the peer replays
    span = int(one.ts_ns[-1] - one.ts_ns[0]) + 1_000_000
    columns = {name: np.concatenate([getattr(one, name)] * repeat)
               for name in ("kind", "price", "qty", "side", "bid", "bid_qty", "ask", "ask_qty")}  # fmt: skip
    ts = np.concatenate([one.ts_ns + k * span for k in range(repeat)])
    events = EventArrays(ts, **columns)
    funding = store.read("binanceusdm", SYMBOL, Kind.FUNDING)
    return ReplayData("binanceusdm", SYMBOL, events, 0, int(ts[0]), int(ts[-1]) + 1, funding, "tiled")


def measure(data: ReplayData, ensemble, label: str) -> dict:  # noqa: ANN001
    gc.collect()
    t0 = time.perf_counter()
    result = run_backtest(data, ensemble, STRIDE, EngineConfig(), VenueConfig(), BacktestConfig(), baselines=False)
    total = time.perf_counter() - t0
    events = data.window_events
    s = result.seconds
    out = {
        "path": label,
        "events": events,
        "signals_s": round(s["signals_s"], 2),
        "loop_s": round(s["main_loop_s"], 2),
        "total_s": round(total, 2),
        "events_per_s": round(events / (s["signals_s"] + s["main_loop_s"])),
        "loop_events_per_s": round(events / s["main_loop_s"]),
        "counts": result.main.counts,
        "net_pnl_usdt": result.main.summary["net_pnl_usdt"],
        "trade_list_hash": result.main.summary["trade_list_hash"],
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--train-ticks", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=20, help="tiles of the real capture (as the peer's --repeat)")
    parser.add_argument("--nautilus-json", type=Path, help="the peer script's output line, same machine")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "backtest.json")
    args = parser.parse_args()

    load = {"load_average_before": list(os.getloadavg())}
    t0 = time.perf_counter()
    ensemble = train_ensemble(args.train_ticks)
    train_s = time.perf_counter() - t0
    synthetic = synthetic_replay(args.ticks, seed=7)
    runs = {"synthetic": [measure(synthetic, ensemble, "full"), measure(synthetic, None, "trivial model")]}
    shared = BENCH.parent.parent / "shared" / "data" / "binance_ws_raw" / "usdm_btcusdt_20240808.gz"
    if shared.exists():
        real = tiled_real(shared, args.repeat)
        runs["real_btcusdt_x%d" % args.repeat] = [measure(real, ensemble, "full"), measure(real, None, "trivial model")]
    out = {**provenance(), **load, "ensemble_train_s": round(train_s, 1), "model_features": len(MODEL_FEATURES),
           "stride": STRIDE, "runs": runs}  # fmt: skip
    if args.nautilus_json and args.nautilus_json.exists():
        peer = json.loads(args.nautilus_json.read_text().strip().splitlines()[-1])
        out["nautilus"] = peer
        key = "real_btcusdt_x%d" % args.repeat
        if key in runs:
            out["ratio_to_nautilus"] = {r["path"]: round(r["events_per_s"] / peer["events_per_s"], 3) for r in runs[key]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
