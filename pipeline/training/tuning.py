"""Optuna tuning of one model kind on purged walk-forward folds.

The objective is the mean validation metric over the folds (log-loss by default, or AUC). Each fold's
validation block is cut in two (``purged_halves``): the model early-stops and calibrates on the first
half and is scored on the second, so calibration never sees the rows it is scored on. Probabilities
are computed over the whole block, so the LSTM's windows on the scored half read the rows before.

TPE is seeded (``seed`` and the worker number: two workers with one seed would propose the same
start-up trials). XGBoost and LSTM trials report the running mean after each fold to a median
pruner, which stops a trial whose first folds are already worse than the median.

Several processes or machines tune one study by pointing at the same storage and study name; the
trial budget is for the study (all workers together; each worker may start one more as another
ends: n workers overshoot by at most n - 1), ``timeout_s`` for each worker. Storage:
``None`` = SQLite file ``$AUTOSCALP_HOME/optuna/optuna.db`` (with a busy timeout: SQLite locks the
whole file per write, which is fine for a few local workers); any SQLAlchemy URL
(``postgresql://user@host/db``) unchanged for many workers or machines; ``journal:PATH`` for
Optuna's append-only journal file (local processes, no database).
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from pipeline.config import TrainingConfig
from pipeline.home import autoscalp_home
from pipeline.models.base import make_model
from pipeline.training import metrics
from pipeline.training.splits import Fold, purged_halves

SQLITE_BUSY_TIMEOUT_S = 60
OPEN_ATTEMPTS = 5
PRUNED_KINDS = ("xgb", "lstm")
# name -> ("float" | "int", low, high, log). Bounds are wide on purpose; fix any of them with
# `fixed_params` (e.g. a smaller n_estimators in a quick run).
SEARCH_SPACES: dict[str, dict[str, tuple[str, float, float, bool]]] = {
    "logistic": {"C": ("float", 1e-4, 10.0, True)},
    "forest": {
        "n_estimators": ("int", 50, 200, False),  # serving cost grows with the trees
        "max_depth": ("int", 3, 12, False),
        "min_samples_leaf": ("int", 5, 500, True),
        "max_features": ("float", 0.1, 1.0, False),
        "max_samples": ("float", 0.3, 1.0, False),
    },
    "xgb": {
        "learning_rate": ("float", 0.01, 0.3, True),
        "max_depth": ("int", 2, 8, False),
        "min_child_weight": ("float", 1.0, 200.0, True),
        "subsample": ("float", 0.5, 1.0, False),
        "colsample_bytree": ("float", 0.3, 1.0, False),
        "reg_lambda": ("float", 1e-3, 30.0, True),
        "reg_alpha": ("float", 1e-4, 10.0, True),
    },
    "lstm": {
        "hidden": ("int", 8, 64, True),
        "learning_rate": ("float", 3e-4, 1e-2, True),
        "dropout": ("float", 0.0, 0.4, False),
        "weight_decay": ("float", 1e-7, 1e-3, True),
    },
}


@dataclass(frozen=True)
class TuningResult:
    kind: str
    study_name: str
    storage: str  # the URL with any password hidden
    metric: str
    best_value: float
    best_params: dict[str, Any]  # suggested and fixed params together: what to fit the final model with
    trials: dict[str, int]  # trial count by state (COMPLETE, PRUNED, FAIL...), all workers


def default_storage_url() -> str:
    path = autoscalp_home().root / "optuna" / "optuna.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_storage(url: str | None = None) -> optuna.storages.BaseStorage:
    """The Optuna storage for a configured URL (see the module docstring)."""
    url = url or default_storage_url()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def redacted(url: str | None) -> str:
    url = url or default_storage_url()
    if url.startswith("journal:"):
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_study(kind: str, study_name: str, config: TrainingConfig, worker: int = 0) -> optuna.Study:
    """Create the study, or join it if another worker already has (same name, same storage)."""
    direction = "minimize" if config.tuning.metric == "log_loss" else "maximize"
    sampler = optuna.samplers.TPESampler(seed=int(np.random.SeedSequence([config.seed, worker]).generate_state(1)[0]))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=config.tuning.pruner_startup_trials)
              if kind in PRUNED_KINDS else optuna.pruners.NopPruner())
    study = None
    for attempt in range(OPEN_ATTEMPTS):
        try:
            study = optuna.create_study(storage=open_storage(config.tuning.storage), study_name=study_name,
                                        direction=direction, sampler=sampler, pruner=pruner, load_if_exists=True)
            break
        except (OperationalError, IntegrityError, ProgrammingError):
            # Workers starting together on a fresh database race to create Optuna's tables and
            # version row; the loser sees "table exists" (SQLite: OperationalError, PostgreSQL:
            # ProgrammingError DuplicateTable) or a duplicate key. The tables exist now.
            if attempt == OPEN_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"study {study_name!r} exists with direction {study.direction.name}, this run needs {direction}"
        )
    study.set_user_attr("kind", kind)
    study.set_user_attr("metric", config.tuning.metric)
    return study


def suggest_params(trial: optuna.Trial, kind: str, fixed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    fixed = dict(fixed or {})
    params = {}
    for name, (dtype, low, high, log) in SEARCH_SPACES[kind].items():
        if name in fixed:
            continue
        if dtype == "int":
            params[name] = trial.suggest_int(name, int(low), int(high), log=log)
        else:
            params[name] = trial.suggest_float(name, low, high, log=log)
    return {**params, **fixed}


def score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    return metrics.log_loss(y, p) if metric == "log_loss" else metrics.roc_auc(y, p)


def fold_scores(
    kind: str,
    params: Mapping[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    ts_ns: np.ndarray,
    label_end_ns: np.ndarray,
    folds: Sequence[Fold],
    config: TrainingConfig,
    trial: optuna.Trial | None = None,
) -> list[float]:
    """The validation metric of each fold (see the module docstring); with a trial, reports and prunes."""
    scores = []
    for step, fold in enumerate(folds):
        early, scored = purged_halves(fold.validation, ts_ns, label_end_ns)
        model = make_model(kind, params, seed=config.seed, calibration=config.calibration)
        model.fit(X[fold.train], y[fold.train], X[early], y[early])
        p_block = model.predict_proba(X[fold.validation])
        scores.append(score(config.tuning.metric, y[scored], p_block[scored - fold.validation[0]]))
        if trial is not None:
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                trial.set_user_attr("fold_scores", scores)
                raise optuna.TrialPruned()
    return scores


def tune(
    kind: str,
    X: np.ndarray,
    y: np.ndarray,
    ts_ns: np.ndarray,
    label_end_ns: np.ndarray,
    folds: Sequence[Fold],
    config: TrainingConfig,
    *,
    study_name: str | None = None,
    worker: int = 0,
    fixed_params: Mapping[str, Any] | None = None,
) -> TuningResult:
    """Run this worker's share of the study's budget, then report the study's best (all workers)."""
    study_name = study_name or f"autoscalp-{kind}"
    study = open_study(kind, study_name, config, worker)
    budget = config.tuning
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id)
        params = suggest_params(trial, kind, fixed_params)
        started = time.perf_counter()
        scores = fold_scores(kind, params, X, y, ts_ns, label_end_ns, folds, config, trial)
        trial.set_user_attr("fold_scores", scores)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        return float(np.mean(scores))

    remaining = None if budget.trials is None else budget.trials - len(study.trials)
    if remaining is None or remaining > 0:
        callbacks = [] if budget.trials is None else [optuna.study.MaxTrialsCallback(budget.trials, states=None)]
        study.optimize(objective, n_trials=remaining, timeout=budget.timeout_s, callbacks=callbacks)
    best = study.best_trial
    return TuningResult(
        kind=kind,
        study_name=study_name,
        storage=redacted(budget.storage),
        metric=budget.metric,
        best_value=float(best.value),
        best_params={**best.params, **dict(fixed_params or {})},
        trials=dict(Counter(t.state.name for t in study.get_trials(deepcopy=False))),
    )
