"""The daemon under load: the real BTCUSDT capture at N x its message rate, for a minute.

Not a test: run it (`.venv/bin/python bench/bench_serve.py`) and it records what it measured in
bench/results/serve.json, with the machine and the git revision. tests/integration/test_serve_load.py
runs the same harness (``run_load``) for less time and asserts on it.

- feed: ``LoopedReplayFeed`` over the trades and quotes of ../shared/data/binance_ws_raw/
  usdm_btcusdt_20240808.gz (87,402 events in 344 s: ~254 messages/s), looped, into the daemon's
  conflating buffer (``serve.queue_soft_limit``). First --prime-laps laps unpaced (3: the engine's
  role features need ~6,000 mid moves to be warm, the capture has 2,026 a lap; until warm the
  engine does not trade and the decision path is short), then --speed x the recorded rate (10:
  ~2,540/s) in wall time for --duration-s; then it ends and the daemon drains what is left.
- daemon: ``build_daemon`` as ``autoscalp serve`` builds it (paper broker, journal, champion
  watcher, telemetry, HTTP server on a free port) in a temporary AUTOSCALP_HOME, run twice:
  ``none``, no model registered (features computed; without a probability the engine's kill
  switch stays ``reducing``: "model failure", no orders), and ``tiny``, a champion registered and
  promoted in that home's MLflow first: test_serve.py's 4-member ensemble (logistic, forest 8
  trees, LSTM window 4 hidden 4, XGBoost 20 rounds) on 4 features, fitted on every 10th quote of
  the capture itself; the engine then trades on the paper venue (orders, fills, journal writes).
- measured over the paced run: RSS every second (/proc/self/status VmRSS, the whole process), its
  growth after --warmup-s; the feed's counters (offered per kind, conflated quotes, dropped, the
  deepest queue: during priming it is the buffer's bound); trades offered against trades the
  daemon's engine took; tick-to-decision p50/p99 from the daemon's own latency histogram
  (``serving.runtime.telemetry.latency_quantile_us``: the bucket counts of the paced run,
  interpolated within a bucket as Prometheus does); events/s the daemon processed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from provenance import provenance  # noqa: E402

from pipeline.data.schemas import Kind  # noqa: E402
from pipeline.data.sources.files.source import FileSource  # noqa: E402
from pipeline.features.events import EventArrays, events_from_batches  # noqa: E402

SYMBOL = "BTC/USDT:USDT"
FEATURES = ("ret_tick_20", "bookimb_l1", "ofi_tick_100", "rv_tick_50")
TINY = {"forest": {"n_estimators": 8, "max_depth": 4},
        "xgb": {"n_estimators": 20, "early_stopping_rounds": 5, "max_depth": 3, "learning_rate": 0.2},
        "lstm": {"window": 4, "hidden": 4, "max_epochs": 2, "patience": 1, "batch_size": 128}}  # fmt: skip
CAPTURE = "binance_ws_raw/usdm_btcusdt_20240808.gz"
MB = 1024 * 1024


def shared_data() -> Path | None:
    for candidate in (os.environ.get("AUTOSCALP_SHARED_DATA"), BENCH.parent.parent / "shared" / "data",
                      "/work/shared/data"):  # fmt: skip
        if candidate and (Path(candidate) / CAPTURE).is_file():
            return Path(candidate)
    return None


def load_capture(path: Path) -> EventArrays:
    """The capture's trades and quotes, merged in the order the models were trained on."""
    batches = [b for b in FileSource(path).batches() if b.kind in (Kind.TRADES, Kind.QUOTES)]
    return events_from_batches(batches, SYMBOL)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler(threading.Thread):
    """RSS, the daemon's event count and the feed's queue every ``every_s``; and a snapshot of the
    daemon's counters the moment the feed's priming is over (``primed``), where the paced run's
    window starts."""

    def __init__(self, daemon, every_s: float = 1.0) -> None:  # noqa: ANN001
        super().__init__(name="rss-sampler", daemon=True)
        self.daemon_, self.every_s = daemon, every_s
        self.samples: list[dict] = []
        self.primed: dict | None = None
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def snapshot(self) -> dict:
        daemon, telemetry = self.daemon_, self.daemon_.telemetry
        return {"t_s": round(time.monotonic() - self._t0, 3), "events": daemon.stats.events,
                "quotes": daemon.stats.quotes, "trades": daemon.stats.trades, "offered": dict(daemon.feed.offered),
                "buckets": list(telemetry._buckets), "latency_sum_ns": telemetry._latency_sum_ns,
                "conflated": daemon.feed.stats()["conflated"]}  # fmt: skip

    def sample(self) -> None:
        feed = self.daemon_.feed.stats()
        self.samples.append({"t_s": round(time.monotonic() - self._t0, 2), "rss_mb": round(rss_bytes() / MB, 1),
                             "events": self.daemon_.stats.events, "queue_depth": feed["queue_depth"],
                             "conflated": feed["conflated"]})  # fmt: skip

    def run(self) -> None:
        feed = self.daemon_.feed
        while not self._halt.is_set():
            if self.primed is None and feed.primed.wait(self.every_s):
                self.primed = self.snapshot()
                deadline = time.monotonic() + self.every_s
                self._halt.wait(max(0.0, deadline - time.monotonic()))
            elif self.primed is not None:
                self._halt.wait(self.every_s)
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


def register_tiny_champion(events: EventArrays) -> int:
    """test_serve.py's tiny ensemble, fitted on the capture's feature rows (every 10th quote, the
    next row's move as the label) and promoted champion in AUTOSCALP_HOME's registry."""
    import mlflow
    import numpy as np

    from pipeline.config import TrackingConfig
    from pipeline.models.base import make_model
    from pipeline.models.ensemble import Ensemble
    from pipeline.training import aliases, tracking
    from pipeline.training.registry import log_ensemble, model_name, register_challenger
    from serving.backtest.signals import feature_rows

    _, values, warm = feature_rows(events, FEATURES)
    X = values[warm][::10]
    X = X[np.isfinite(X).all(axis=1)]
    y = (np.diff(X[:, 0], append=0.0) > 0).astype(np.int64)
    split = int(len(X) * 0.7)
    members = {k: make_model(k, TINY.get(k), seed=1).fit(X[:split], y[:split], X[split:], y[split:])
               for k in ("logistic", "forest", "lstm", "xgb")}  # fmt: skip
    ensemble = Ensemble(members, feature_names=FEATURES)
    _, experiment = tracking.connect(TrackingConfig())
    with mlflow.start_run(experiment_id=experiment) as run, tempfile.TemporaryDirectory() as tmp:
        info = log_ensemble(ensemble.save(Path(tmp) / "ensemble"), ensemble, np.zeros((2, len(FEATURES))), {})
        tags = {"autoscalp.sampling": "quote/10", "autoscalp.oos_auc": "0.6"}
        version = register_challenger(info.model_uri, SYMBOL, tags, run.info.run_id).version
    aliases.promote(model_name(SYMBOL), version)
    return int(version)


def run_load(home: Path, events: EventArrays, speed: float, duration_s: float, warmup_s: float,
             champion: bool = False, prime_events: int = 0) -> dict:  # fmt: skip
    """Serve ``events`` looped at ``speed`` x for ``duration_s`` through a daemon built in ``home``
    (an empty directory, made AUTOSCALP_HOME), with a tiny champion or none, after
    ``prime_events`` offered unpaced; what was measured over the paced run (module doc)."""
    os.environ["AUTOSCALP_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # mlflow exports it: an earlier home's must not leak in
    from flows.config import ProductConfig
    from serving.daemon.build import build_daemon
    from serving.feeds.looped import LoopedReplayFeed
    from serving.runtime.telemetry import latency_quantile_us

    config = ProductConfig.model_validate({"data": {"store_dir": str(home / "store")}})
    serve = config.serve.model_copy(update={"speed": speed, "http_port": 0, "model_poll_s": 3600.0})
    version = register_tiny_champion(events) if champion else None
    daemon = build_daemon(config, serve, SYMBOL)
    serving = daemon.watcher.serving
    if champion and (serving is None or serving.version.version != version):
        raise RuntimeError(f"the champion did not load: {daemon.watcher.status()}")
    recorded_rate = len(events) / ((events.ts_ns[-1] - events.ts_ns[0]) / 1e9)
    daemon.feed = feed = LoopedReplayFeed(SYMBOL, events, speed, duration_s, prime_events=prime_events,
                                          max_events=serve.queue_soft_limit)  # fmt: skip
    sampler = RssSampler(daemon)
    sampler.sample()
    sampler.start()
    try:
        stats = daemon.run(duration_s=duration_s + 600.0)  # ends with the feed, once drained
    finally:
        sampler.stop()
        daemon.control.stop()
    end = sampler.snapshot()
    primed = sampler.primed or end
    paced_s = end["t_s"] - primed["t_s"]
    paced_offered = {k: v - primed["offered"].get(k, 0) for k, v in feed.offered.items()}
    buckets = [b - a for a, b in zip(primed["buckets"], end["buckets"])]
    decisions = sum(buckets)
    after = [s["rss_mb"] for s in sampler.samples if s["t_s"] >= primed["t_s"] + warmup_s]
    after = after or [sampler.samples[-1]["rss_mb"]]
    telemetry, counters = daemon.telemetry, feed.stats()
    hit = telemetry.hit[SYMBOL]
    return {
        "champion": serving.version_label if serving is not None else None,
        "speed": speed,
        "recorded_per_s": round(recorded_rate, 1),
        "prime_events": prime_events,
        "prime_s": primed["t_s"] if prime_events else 0.0,
        "feed_s": duration_s,
        "paced_wall_s": round(paced_s, 2),
        "offered_per_s": round(sum(paced_offered.values()) / duration_s),
        "processed_per_s": round((end["events"] - primed["events"]) / paced_s),
        "laps": feed.laps,
        "offered": dict(feed.offered),
        "offered_paced": paced_offered,
        "engine": {"quotes": stats.quotes, "trades": stats.trades, "events": stats.events, "records": stats.records,
                   "orders": stats.orders, "fills": stats.fills},  # fmt: skip
        "stopped_because": stats.stopped_because,
        "kill_switch": daemon.engine.kill.state if daemon.engine is not None else None,
        "kill_reason": daemon.engine.kill.reason if daemon.engine is not None else None,
        "predictions_judged": hit.hits + hit.misses + hit.flats,
        "feed_counters": {k: counters[k] for k in ("received", "delivered", "conflated", "dropped",
                                                    "max_queue_depth")},  # fmt: skip
        "conflated_quotes": counters["conflated"],
        "tick_to_decision_us": {"p50": round(latency_quantile_us(buckets, 0.50), 2),
                                "p99": round(latency_quantile_us(buckets, 0.99), 2),
                                "mean": round((end["latency_sum_ns"] - primed["latency_sum_ns"]) / max(decisions, 1)
                                              / 1e3, 2),
                                "decisions": decisions,
                                "whole_run": {"p50": round(telemetry.latency_quantile_us(0.50), 2),
                                              "p99": round(telemetry.latency_quantile_us(0.99), 2),
                                              "decisions": telemetry.ticks}},  # fmt: skip
        "rss_mb": {"start": sampler.samples[0]["rss_mb"], "at_warmup": after[0], "max_after_warmup": max(after),
                   "end": sampler.samples[-1]["rss_mb"], "growth_after_warmup": round(max(after) - after[0], 1),
                   "warmup_s": warmup_s},  # fmt: skip
        "samples": sampler.samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=10.0, help="x the capture's message rate")
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--champion", choices=("none", "tiny", "both"), default="both")
    parser.add_argument("--prime-laps", type=float, default=3.0,
                        help="laps of the capture offered unpaced first (3: the features' warm-up)")
    parser.add_argument("--out", default=str(BENCH / "results" / "serve.json"))
    args = parser.parse_args()
    data = shared_data()
    if data is None:
        sys.exit(f"no {CAPTURE} under ../shared/data: set AUTOSCALP_SHARED_DATA")
    record: dict = {"provenance": provenance(), "capture": CAPTURE, "runs": {}}
    t = time.perf_counter()
    events = load_capture(data / CAPTURE)
    record["load_capture_s"] = round(time.perf_counter() - t, 2)
    for champion in ("none", "tiny") if args.champion == "both" else (args.champion,):
        with tempfile.TemporaryDirectory(prefix="bench-serve-") as home:
            result = run_load(Path(home), events, args.speed, args.duration_s, args.warmup_s, champion == "tiny",
                              prime_events=int(args.prime_laps * len(events)))
        record["runs"][champion] = result
        print(champion, json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
