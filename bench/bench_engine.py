"""Engine decision latency per tick, excluding feature computation and model inference.

Not a test: run it (`.venv/bin/python bench/bench_engine.py`) and it records what it measured in
bench/results/engine.json, with the machine and the git revision.

Prices come from the seeded synthetic simulator (`pipeline.data.sources.synthetic.simulate`). The
feature vectors are precomputed before the timed loop, as the feature engine would hand them over:
the engine's 14 role features derived from the simulated mids with pandas (plausible magnitudes,
and regimes and signals that actually move) plus filler features to a realistic vector length;
the model probability is a noisy function of order-flow imbalance. A toy venue (market orders fill
at the touch, resting limits when the book trades through them, stops trigger on the touch,
cancels confirm at once) feeds fills back, so entries, quotes, stops, trailing exits and vetoes
all happen during the run. Only `Engine.on_tick` is timed (perf_counter_ns around each call, its
~0.1 µs overhead included); `on_fill` is timed separately.

Two runs over the same ticks: the default configuration (market making in normal regimes, quoting a
few basis points wide, so it is rarely filled on this toy venue), and a busy one (every strategy in
every regime, quotes a fraction of a basis point wide) that keeps a position open most of the time.
The machine is shared: the load average before the run is recorded, and the tail (p999, max) is
mostly the scheduler's.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from provenance import provenance  # noqa: E402

from pipeline.data.sources.synthetic import simulate  # noqa: E402
from serving.config import EngineConfig, MarketMakingConfig, RiskConfig, RoutingConfig  # noqa: E402
from serving.engine import Engine  # noqa: E402
from serving.events import LIMIT, MARKET, Fill, MarketLimits, OrderDone, Quote  # noqa: E402
from serving.features import ROLES  # noqa: E402
from serving.risk.kill_switch import STATES  # noqa: E402

SYMBOL = "BTC/USDT:USDT"
T0 = 1_704_067_200_000_000_000  # 2024-01-01
MAKER_FEE, TAKER_FEE = 0.0002, 0.0005


def synthetic_quotes(n_events: int, seed: int) -> pd.DataFrame:
    _, quotes = simulate(seed, n_events, T0, 60_000.0, 0.1)
    ts, _, _, bid, bid_qty, ask, ask_qty = quotes
    return pd.DataFrame({"ts": ts, "bid": bid, "bid_qty": bid_qty, "ask": ask, "ask_qty": ask_qty})


def plausible_features(q: pd.DataFrame, n_features: int, seed: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(features [n, n_features], names, p_up [n]) derived from the quotes."""
    rng = np.random.default_rng(seed)
    mid = (q.bid + q.ask) / 2
    ret = np.log(mid).diff().fillna(0.0)
    r2 = ret**2
    log_mid = np.log(mid)
    up, down = ret.clip(lower=0), (-ret).clip(lower=0)
    rsi = (up.ewm(alpha=0.01).mean() - down.ewm(alpha=0.01).mean()) / (
        up.ewm(alpha=0.01).mean() + down.ewm(alpha=0.01).mean() + 1e-12
    )
    sd200 = log_mid.ewm(span=200).std()
    depth_imb = (q.bid_qty - q.ask_qty) / (q.bid_qty + q.ask_qty)
    ofi = depth_imb.ewm(span=100).mean()
    net = log_mid.diff(200).abs()
    path = ret.abs().rolling(200, min_periods=1).sum()
    roles = {
        "rv_fast": np.sqrt(r2.ewm(span=50).mean()),
        "rv_slow": np.sqrt(r2.ewm(span=1000).mean()),
        "atr": ret.abs().ewm(span=100).mean(),
        "rsi": rsi,
        "bb_z": (log_mid - log_mid.ewm(span=200).mean()) / (sd200 + 1e-12),
        "vwap_dev": mid / mid.ewm(span=200).mean() - 1,
        "vol_spike": pd.Series(np.exp(rng.normal(0, 0.5, len(q)))),
        "momentum": log_mid.diff(100) / (np.sqrt(r2.ewm(span=100).mean() * 100) + 1e-12),
        "ofi": ofi,
        "book_imbalance": depth_imb,
        "spread_rel": (q.ask - q.bid) / mid,
        "efficiency": net / (path + 1e-12),
        "trend_strength": ret.ewm(span=200).mean() / (np.sqrt(r2.ewm(span=200).mean()) + 1e-12) * np.sqrt(200),
        "tick_vol": ret.abs().ewm(span=100).mean() * 1e4,
    }
    config = EngineConfig()
    names = [getattr(config.features, role) for role in ROLES]
    columns = [roles[role].to_numpy(dtype=np.float64, copy=True) for role in ROLES]
    columns[ROLES.index("efficiency")][:200] = np.nan  # warm-up: the NaN path is exercised too
    names += [f"filler_{i}" for i in range(n_features - len(names))]
    columns += [rng.normal(size=len(q)) for _ in range(n_features - len(columns))]
    order = rng.permutation(n_features)  # the engine must find its features anywhere in the vector
    features = np.column_stack([columns[i] for i in order])
    p_up = 0.5 + 0.2 * np.tanh(3 * ofi.to_numpy() + rng.normal(0, 0.3, len(q)))
    return features, [names[i] for i in order], p_up


class ToyVenue:
    """Just enough of a venue to close the loop; the real simulated venue is the backtester's."""

    def __init__(self) -> None:
        self.working: dict[str, object] = {}

    def submit(self, record, ts: int) -> list:
        events = []
        for cancel in record.cancels:
            if self.working.pop(cancel.client_id, None) is not None:
                events.append(OrderDone(cancel.symbol, ts, cancel.client_id, "cancelled"))
        for order in record.orders:
            self.working[order.client_id] = order
        return events

    def match(self, quote: Quote) -> list:
        fills = []
        for cid, o in list(self.working.items()):
            if o.type == MARKET:
                price, fee = (quote.ask if o.side > 0 else quote.bid), TAKER_FEE
            elif o.type == LIMIT:
                through = quote.ask <= o.price if o.side > 0 else quote.bid >= o.price
                if not through:
                    continue
                price, fee = o.price, MAKER_FEE
            else:
                touched = quote.ask >= o.price if o.side > 0 else quote.bid <= o.price
                if not touched:
                    continue
                price, fee = (quote.ask if o.side > 0 else quote.bid), TAKER_FEE
            del self.working[cid]
            fills.append(Fill(o.symbol, quote.ts_ns, cid, price, o.qty, o.side, price * o.qty * fee))
        return fills


def busy_config() -> EngineConfig:
    """Every strategy in every regime, and a market maker quoting a fraction of a basis point wide:
    positions are open most of the time, so the position paths (trailing, stops, trims) run too."""
    every = ("momentum_breakout", "mean_reversion", "market_making")
    return EngineConfig(
        routing=RoutingConfig(normal=every, trending=every, ranging=every, volatile=every),
        market_making=MarketMakingConfig(min_half_spread_bps=0.2, vol_spread_mult=1.0),
        # a latency run, not a PnL one: the toy venue's adverse fills must not halt it half-way
        risk=RiskConfig(daily_loss_limit_pct=100.0, max_drawdown_pct=100.0),
    )


def run(config: EngineConfig, quotes: pd.DataFrame, features: np.ndarray, names: list[str], p_up: np.ndarray) -> dict:
    engine = Engine(config, names, [MarketLimits(SYMBOL, 125.0, 0.1, 0.001, 5.0)], equity_usdt=10_000.0)
    venue = ToyVenue()
    position = engine.symbols[SYMBOL].position
    n = len(quotes)
    rows = list(zip(quotes.ts.tolist(), quotes.bid.tolist(), quotes.bid_qty.tolist(), quotes.ask.tolist(),
                    quotes.ask_qty.tolist()))  # fmt: skip
    p_list = p_up.tolist()
    tick_ns = np.empty(n, np.int64)
    fill_ns = []
    counts = {"orders": 0, "cancels": 0, "vetoes": 0, "fills": 0, "records": 0, "ticks_in_position": 0,
              "veto_reasons": {}}  # fmt: skip
    clock = time.perf_counter_ns
    gc.collect()
    wall = clock()
    for i in range(n):
        ts, bid, bid_qty, ask, ask_qty = rows[i]
        quote = Quote(SYMBOL, ts, bid, bid_qty, ask, ask_qty)
        for fill in venue.match(quote):
            start = clock()
            record = engine.on_fill(fill)
            fill_ns.append(clock() - start)
            counts["fills"] += 1
            _account(engine, venue, record, ts, counts)
        vector = features[i]
        start = clock()
        record = engine.on_tick(quote, vector, p_list[i])
        tick_ns[i] = clock() - start
        _account(engine, venue, record, ts, counts)
        counts["ticks_in_position"] += position.qty != 0.0
    wall = clock() - wall
    us = tick_ns / 1e3
    return {
        "ticks": n,
        "features_per_vector": features.shape[1],
        "tick_us": {
            "p50": round(float(np.percentile(us, 50)), 2),
            "p90": round(float(np.percentile(us, 90)), 2),
            "p99": round(float(np.percentile(us, 99)), 2),
            "p999": round(float(np.percentile(us, 99.9)), 2),
            "max": round(float(us.max()), 1),
            "mean": round(float(us.mean()), 2),
        },
        "fill_us": {
            "p50": round(float(np.percentile(fill_ns, 50)) / 1e3, 2) if fill_ns else None,
            "p99": round(float(np.percentile(fill_ns, 99)) / 1e3, 2) if fill_ns else None,
        },
        "engine_ticks_per_s": round(n / (tick_ns.sum() / 1e9)),
        "loop_events_per_s_with_toy_venue": round(n / (wall / 1e9)),
        **counts,
        "final_equity_usdt": round(engine.portfolio.equity_usdt, 2),
        "kill_switch": STATES[engine.kill.state],
    }


def _account(engine, venue, record, ts, counts) -> None:
    """Hand a record's orders to the venue and its cancel confirmations back to the engine."""
    pending = [record]
    while pending:
        record = pending.pop()
        if record is None:
            continue
        counts["records"] += 1
        counts["orders"] += len(record.orders)
        counts["cancels"] += len(record.cancels)
        counts["vetoes"] += len(record.vetoes)
        for _, why in record.vetoes:
            check = why.split(":")[0]
            counts["veto_reasons"][check] = counts["veto_reasons"].get(check, 0) + 1
        pending.extend(engine.on_order_done(done) for done in venue.submit(record, ts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=400_000, help="simulated events (quotes are ~70 %%)")
    parser.add_argument("--features", type=int, default=64, help="length of the feature vector")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "engine.json")
    args = parser.parse_args()
    results = {
        **provenance(),
        "target": "p99 <= 20 us per tick, excluding features and model",
    }
    quotes = synthetic_quotes(args.events, args.seed)
    features, names, p_up = plausible_features(quotes, args.features, args.seed)
    results["default_config"] = run(EngineConfig(), quotes, features, names, p_up)
    results["busy_config"] = run(busy_config(), quotes, features, names, p_up)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
