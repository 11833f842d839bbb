"""Ingest throughput: raw Binance websocket lines and synthetic tick generation.

Not a test: run it (`make bench`) and it records what it measured in bench/results/ingest.json,
with the machine and the git revision. Each figure is the median of --repeat runs.

  parse   : FileSource over a real raw capture (gzip -> normalised Arrow tables), lines/s
  ingest  : parse + quality checks + atomic parquet writes into an empty store, lines/s
  reingest: the same file again (everything already stored: dedupe only), lines/s
  synthetic: SyntheticSource generating N events (trades + quotes) per symbol, events/s
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from provenance import provenance  # noqa: E402

from pipeline.config import QualityConfig, SyntheticSourceConfig  # noqa: E402
from pipeline.data.ingest import ingest  # noqa: E402
from pipeline.data.sources.files import FileSource  # noqa: E402
from pipeline.data.sources.synthetic import SyntheticSource  # noqa: E402
from pipeline.data.store import TickStore  # noqa: E402

DEFAULT_RAW = BENCH.parent.parent / "shared" / "data" / "binance_ws_raw" / "usdm_btcusdt_20240808.gz"


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_raw(path: Path, repeat: int) -> dict:
    with gzip.open(path, "rt") as handle:
        lines = sum(1 for _ in handle)
    parse_s, batches = timed(lambda: list(FileSource(path).batches()), repeat)
    rows = sum(b.rows.num_rows for b in batches)

    def fresh_ingest():
        with tempfile.TemporaryDirectory() as root:
            return ingest(FileSource(path), TickStore(root), QualityConfig())

    ingest_s, _ = timed(fresh_ingest, repeat)
    with tempfile.TemporaryDirectory() as root:
        store = TickStore(root)
        ingest(FileSource(path), store, QualityConfig())
        reingest_s, report = timed(lambda: ingest(FileSource(path), store, QualityConfig()), repeat)
        assert report.added == 0
    return {
        "file": path.name,
        "lines": lines,
        "rows": rows,
        "parse_lines_per_s": round(lines / parse_s),
        "ingest_lines_per_s": round(lines / ingest_s),
        "reingest_lines_per_s": round(lines / reingest_s),
        "parse_s": round(parse_s, 3),
        "ingest_s": round(ingest_s, 3),
    }


def bench_synthetic(events: int, repeat: int) -> dict:
    config = SyntheticSourceConfig(ticks=events)
    source = SyntheticSource(config, ("BTC/USDT:USDT",))
    start = time.perf_counter()
    list(SyntheticSource(SyntheticSourceConfig(ticks=1000), ("BTC/USDT:USDT",)).batches())
    warmup_s = time.perf_counter() - start  # first call: JIT compile or cache load
    seconds, batches = timed(lambda: list(source.batches()), repeat)
    rows = sum(b.rows.num_rows for b in batches)
    return {
        "events": events,
        "rows": rows,
        "events_per_s": round(rows / seconds),
        "seconds": round(seconds, 3),
        "first_call_s": round(warmup_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "ingest.json")
    args = parser.parse_args()

    results = {
        **provenance(),
        "repeat": args.repeat,
    }
    if args.raw.is_file():
        results["raw_binance"] = bench_raw(args.raw, args.repeat)
    else:
        results["raw_binance"] = f"skipped: {args.raw} not found"
    results["synthetic"] = bench_synthetic(args.events, args.repeat)
    results["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
