"""Retrain-cycle time on --ticks synthetic ticks with a fixed trial budget, split into ingest,
feature, tuning and per-model fit time.

Not a test: run it and it records what it measured in bench/results/retrain.json, with the machine
and the git revision. Everything runs in a temporary AUTOSCALP_HOME (embedded MLflow and Optuna
SQLite stores), in-process (no Prefect), as `autoscalp ingest`, `features build` and `train
--no-prefect` would, with the default config except the tick count and --trials.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from provenance import provenance  # noqa: E402
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "retrain.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AUTOSCALP_HOME"] = str(Path(tmp) / "home")
        config_path = Path(tmp) / "bench.yaml"
        config_path.write_text(f"extends: {BENCH.parent / 'conf' / 'base.yaml'}\n"
                               f"sources:\n  synthetic:\n    ticks: {args.ticks}\n"
                               f"training:\n  tuning:\n    trials: {args.trials}\n")
        from flows.config import load_product_config
        from flows.features import build_in_process
        from flows.retrain import train_symbol
        from pipeline.data.ingest import ingest
        from pipeline.data.sources import build_source, plan_sources
        from pipeline.data.store import TickStore
        from pipeline.home import autoscalp_home

        config = load_product_config(config_path)
        t0 = time.perf_counter()
        store = TickStore(autoscalp_home().store)
        for spec in plan_sources(config, "synthetic", (), (), None):
            ingest(build_source(spec, config), store, config.quality)
        t1 = time.perf_counter()
        report = build_in_process(None, None, str(config_path))
        t2 = time.perf_counter()
        [symbol] = sorted({p["symbol"] for p in report["partitions"] if p["rows"]})
        result = train_symbol(symbol, report, config, features_s=t2 - t1)
        t3 = time.perf_counter()

    timings = result["timings"]
    kinds = list(result["models"])
    out = {
        **provenance(),
        "ticks": args.ticks,
        "trials_per_model": args.trials,
        "rows": result["rows"],
        "split": result["split"],
        "seconds": {
            "ingest": round(t1 - t0, 2),
            "features": round(t2 - t1, 2),
            "tuning_total": round(sum(timings[f"tune_{k}_s"] for k in kinds), 2),
            "tuning": {k: round(timings[f"tune_{k}_s"], 2) for k in kinds},
            "final_fit": {k: round(timings[f"fit_{k}_s"], 2) for k in kinds},
            "ensemble_eval_log_register": round(timings["ensemble_s"], 2),
            "train_cycle": round(timings["cycle_s"], 2),
            "total": round(t3 - t0, 2),
        },
        "oos_auc": {k: round(result["models"][k]["oos"]["auc"], 4) for k in kinds}
                   | {"ensemble": round(result["ensemble"]["oos"]["auc"], 4)},
        "comparison": result["comparison"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
