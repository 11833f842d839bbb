"""Optuna tuning: seeded and reproducible, pruning for XGBoost/LSTM, one study shared by two processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from pipeline.config import TrainingConfig, TuningConfig
from pipeline.training.splits import purged_walk_forward
from pipeline.training.tuning import open_storage, open_study, tune

SECOND = 1_000_000_000
HORIZON_NS = 30 * SECOND
WORKER = Path(__file__).with_name("tune_worker.py")
REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(autouse=True)
def _quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(5)
    n, k = 2400, 4
    X = rng.normal(size=(n, k))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X[:, 0] - X[:, 1] - 0.8)))).astype(np.int64)
    ts = np.arange(n, dtype=np.int64) * SECOND
    ends = ts + (rng.random(n) * HORIZON_NS).astype(np.int64)
    return X, y, ts, ends


def config(trials: int, storage: str | None = None, **tuning) -> TrainingConfig:
    return TrainingConfig(tuning=TuningConfig(trials=trials, storage=storage, **tuning))


def test_default_storage_is_sqlite_under_autoscalp_home_and_reruns_reproduce(home, rows):
    X, y, ts, ends = rows
    folds = purged_walk_forward(ts, folds=2, label_end_ns=ends)
    first = tune("logistic", X, y, ts, ends, folds, config(4), study_name="a")
    assert (home / "optuna" / "optuna.db").is_file()
    assert first.trials == {"COMPLETE": 4} and set(first.best_params) == {"C"}
    assert first.storage.startswith("sqlite:///") and first.metric == "log_loss"
    again = tune("logistic", X, y, ts, ends, folds, config(4), study_name="b")
    assert again.best_params == first.best_params
    assert abs(again.best_value - first.best_value) < 1e-6
    # the budget is the study's: a rerun on a finished study adds no trials
    assert tune("logistic", X, y, ts, ends, folds, config(4), study_name="a").trials == {"COMPLETE": 4}


def test_xgb_trials_report_each_fold_to_a_median_pruner(tmp_path, rows):
    X, y, ts, ends = rows
    folds = purged_walk_forward(ts, folds=3, label_end_ns=ends)
    cfg = config(6, f"journal:{tmp_path / 'journal.log'}", pruner_startup_trials=2)
    result = tune("xgb", X, y, ts, ends, folds, cfg, study_name="x",
                  fixed_params={"n_estimators": 30, "early_stopping_rounds": 5})
    study = open_study("xgb", "x", cfg)
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    assert sum(result.trials.values()) == 6 and result.best_params["n_estimators"] == 30
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert sorted(trial.intermediate_values) == [0, 1, 2]
        assert trial.value == pytest.approx(np.mean(trial.user_attrs["fold_scores"]))
    assert isinstance(open_study("logistic", "l", cfg).pruner, optuna.pruners.NopPruner)


def test_two_worker_processes_share_one_study(home, rows, tmp_path):
    X, y, ts, ends = rows
    np.savez(tmp_path / "data.npz", X=X, y=y, ts_ns=ts, label_end_ns=ends)
    # No study and no database yet: both workers create them at once (behind a barrier) and must agree.
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {**os.environ, "AUTOSCALP_HOME": str(home), "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen([sys.executable, str(WORKER), str(tmp_path / "data.npz"), "shared", str(i), "2", "8",
                          str(ready)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=180) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="shared", storage=open_storage(None))
    trials = study.get_trials()
    by_worker = {t.user_attrs["worker"] for t in trials}
    assert len(by_worker) == 2, by_worker  # both processes ran trials of the one study
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert 8 <= len(trials) <= 9  # the budget is shared: a worker may start one trial as the other ends
