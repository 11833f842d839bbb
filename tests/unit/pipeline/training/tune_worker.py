"""One tuning worker process (run by test_tuning.py): waits until every worker is ready, then tunes.

Usage: python tune_worker.py DATA.npz STUDY WORKER WORKERS TRIALS READY_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import optuna


def main() -> None:
    data_path, study, worker, workers, trials, ready_dir = sys.argv[1:]
    from pipeline.config import TrainingConfig, TuningConfig
    from pipeline.training.splits import purged_walk_forward
    from pipeline.training.tuning import tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with np.load(data_path) as data:
        X, y, ts, ends = data["X"], data["y"], data["ts_ns"], data["label_end_ns"]
    folds = purged_walk_forward(ts, folds=2, label_end_ns=ends)
    config = TrainingConfig(tuning=TuningConfig(trials=int(trials)))
    # A barrier, so that both workers tune at the same time (imports take seconds on a busy machine).
    ready = Path(ready_dir)
    (ready / worker).touch()
    deadline = time.monotonic() + 120
    while len(list(ready.iterdir())) < int(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    result = tune("logistic", X, y, ts, ends, folds, config, study_name=study, worker=int(worker))
    print(result.trials)


if __name__ == "__main__":
    main()
