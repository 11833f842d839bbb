"""Fit and batch-predict times of the four models and the ensemble, one thread, default params.

Not a test: run it and it records what it measured in bench/results/models.json, with the machine
and the git revision. Data: a planted signal (as in the unit tests), --rows x --features float64 in
time order: --train-rows for training, then a quarter of that each for validation (early stopping
and calibration) and test. Library imports are done before the clocks start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from provenance import provenance  # noqa: E402
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.models.base import make_model  # noqa: E402
from pipeline.models.ensemble import DEFAULT_WEIGHTS, Ensemble  # noqa: E402
from pipeline.training.metrics import brier, log_loss, reliability, roc_auc  # noqa: E402


def planted(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    lagged = np.r_[0.0, X[:-1, 2]]
    z = 0.6 * X[:, 0] - 0.4 * X[:, 1] + 0.4 * lagged + 0.3 * np.tanh(X[:, 3] * X[:, 4]) - 1.0
    return X, (rng.random(rows) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=25)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "models.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import sklearn.ensemble, sklearn.isotonic, sklearn.linear_model, xgboost  # noqa: E401, F401 (warm imports)

    a = args.train_rows
    b = a + a // 4
    X, y = planted(b + a // 4, args.features)
    results = {
        **provenance(),
        "rows": len(y), "features": args.features, "train_rows": a, "validation_rows": b - a,
        "test_rows": len(y) - b, "threads": 1, "models": {},
    }
    members = {}
    for kind in ("logistic", "forest", "xgb", "lstm"):
        started = time.perf_counter()
        model = make_model(kind, seed=7).fit(X[:a], y[:a], X[a:b], y[a:b])
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        p = model.predict_proba(X[b:])
        predict_s = time.perf_counter() - started
        members[kind] = model
        results["models"][kind] = {
            "fit_s": round(fit_s, 3), "predict_s": round(predict_s, 4),
            "auc": round(roc_auc(y[b:], p), 4), "log_loss": round(log_loss(y[b:], p), 4),
            "brier": round(brier(y[b:], p), 4), "ece": round(reliability(y[b:], p).expected_calibration_error, 4),
            "fit_info": {k: v for k, v in model.fit_info.items() if k != "val_loss_history"},
        }
        print(kind, json.dumps(results["models"][kind]), flush=True)
    ensemble = Ensemble(members, dict(DEFAULT_WEIGHTS))
    p = ensemble.predict_proba(X[b:])
    results["ensemble"] = {"auc": round(roc_auc(y[b:], p), 4), "log_loss": round(log_loss(y[b:], p), 4),
                           "brier": round(brier(y[b:], p), 4)}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["ensemble"]))


if __name__ == "__main__":
    main()
