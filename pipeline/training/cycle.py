"""One retrain cycle of one symbol: tune, fit, evaluate out of sample, ensemble, log, register.

The rows (in time order) are cut by the purged walk-forward split (pipeline.training.splits) into
``folds + 1`` blocks. The last block is the **held-back test block**: feature selection never saw it
(it uses the same split) and neither does tuning or fitting. Then:

1. each model kind is tuned by Optuna on the walk-forward folds before the test block
   (pipeline.training.tuning); the study is named after the symbol, the dataset fingerprint and the
   config hash, so a retried cycle resumes it instead of starting over;
2. each model is fitted with its best params on the blocks before the last validation block, and
   early-stopped and calibrated on that block (purged of rows whose label reaches the test block);
3. each model and the ensemble (configured weights; optionally re-fitted on the validation block,
   constrained to the simplex, recorded) are scored on the test block. The ensemble is compared
   with the best single model there and the difference is reported whatever its sign;
4. the ensemble is logged as one pyfunc model and registered as ``autoscalp-<slug>@challenger``
   (pipeline.training.registry), last, after everything else succeeded.

MLflow: one parent run per cycle, a nested run per model (with a nested run per Optuna trial) and
one for the ensemble; tags carry the dataset fingerprint, git SHA, seeds and config hash.
Reproducible: the same rows, config and seed give the same metrics (seeded TPE, seeded models).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import AppConfig
from pipeline.models.base import Model, make_model
from pipeline.models.compiled import CompiledEnsemble, export_ensemble
from pipeline.models.compiled.cost import serving_cost
from pipeline.models.ensemble import MEMBERS, Ensemble
from pipeline.monitoring.drift import reference_bins
from pipeline.training import metrics, tracking
from pipeline.training.data import TrainingDataError, TrainingTable
from pipeline.training.registry import Registered, log_ensemble, model_name, register_challenger, symbol_slug
from pipeline.training.splits import SplitError, purged_walk_forward
from pipeline.training.tuning import TuningResult, open_storage, tune

log = logging.getLogger(__name__)

# Rows before a scored block that the models also read (the LSTM's window), so that the block's
# first rows are not predicted from a padded window.
CONTEXT_ROWS = 256
SUMMARY_KEYS = ("auc", "log_loss", "brier", "precision", "recall", "ece", "rows", "positive_rate")


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # fit rows of the final models
    validation: np.ndarray  # early stopping, calibration, weight re-fit
    test: np.ndarray  # the held-back block: out-of-sample scores
    tuning_folds: list  # walk-forward folds before the test block

    def describe(self, ts_ns: np.ndarray) -> dict:
        return {"train_rows": len(self.train), "validation_rows": len(self.validation), "test_rows": len(self.test),
                "tuning_folds": len(self.tuning_folds), "test_from_ns": int(ts_ns[self.test[0]]),
                "test_to_ns": int(ts_ns[self.test[-1]])}


@dataclass
class CycleResult:
    symbol: str
    run_id: str
    experiment_id: str
    tracking_uri: str
    dataset: str
    rows: int
    split: dict
    models: dict[str, dict]  # kind -> {"oos": {...}, "validation": {...}, "params", "tuning", "tune_s", "fit_s"}
    ensemble: dict  # {"oos": {...}, "weights", "weights_fit", "default_weights_oos"}
    comparison: dict  # the ensemble against the best single model on the test block
    timings: dict[str, float]
    registered: Registered | None = None
    tags: dict[str, str] = field(default_factory=dict)
    trigger: str = "manual"  # why the cycle ran: schedule, manual, "drift: ..."
    feedback: dict | None = None  # the serving champion's live outcomes (pipeline.monitoring.feedback)
    fitted: Ensemble | None = field(default=None, repr=False, compare=False)  # the registered ensemble, in memory

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k != "fitted"}
        data["registered"] = asdict(self.registered) if self.registered else None
        return data


def cycle_config(config: AppConfig) -> Any:
    """The sections a cycle's results depend on (hashed into tags and study names): labels, features
    and training without where it is tracked."""
    from pydantic import BaseModel

    class CycleConfig(BaseModel):
        labels: Any
        features: Any
        training: Any

    return CycleConfig(labels=config.labels, features=config.features,
                       training=config.training.model_copy(update={"tracking": None}))


def plan_split(table: TrainingTable, config: AppConfig) -> Split:
    """Walk-forward folds; the last validation block becomes the test block (see the module docstring)."""
    wf = config.training.walk_forward
    if wf.folds < 2:
        raise TrainingDataError("training.walk_forward.folds must be >= 2: one fold is held back as the test block")
    embargo_ns = None if wf.embargo_s is None else int(wf.embargo_s * 1e9)
    try:
        folds = purged_walk_forward(table.ts_ns, folds=wf.folds, label_end_ns=table.exit_ts_ns,
                                    embargo_ns=embargo_ns, min_train_rows=wf.min_train_rows)
    except SplitError as exc:
        raise TrainingDataError(f"{table.symbol}: {exc} (training.walk_forward)") from None
    test = folds[-1].validation
    # the last validation block, without rows whose label or embargo reaches the test block
    validation = np.intersect1d(folds[-2].validation, folds[-1].train)
    train = folds[-2].train
    for name, rows in (("training", train), ("validation", validation), ("test", test)):
        if len(rows) == 0 or table.y[rows].min() == table.y[rows].max():
            raise TrainingDataError(
                f"{table.symbol}: the {name} block ({len(rows)} rows) has one class only; more data or fewer folds")
    return Split(train, validation, test, folds[:-1])


def version_tags(table: TrainingTable, split: Split, config: AppConfig, oos: dict) -> dict[str, str]:
    """What promotion needs to know of a version: the last event time its fit saw (labels
    included: a validation row's label reads ticks up to its exit), its test block, the
    sampling grid its LSTM windows were cut on, and its out-of-sample AUC."""
    fitted = np.concatenate([split.train, split.validation])
    return {
        "autoscalp.fit_end_ns": str(int(table.exit_ts_ns[fitted].max())),
        "autoscalp.test_from_ns": str(int(table.ts_ns[split.test[0]])),
        "autoscalp.test_to_ns": str(int(table.ts_ns[split.test[-1]])),
        "autoscalp.sampling": f"{config.features.sampling.every}/{config.features.sampling.stride}",
        "autoscalp.oos_auc": repr(float(oos["auc"])) if "auc" in oos else "nan",
    }


def predict_block(model: Model | Ensemble, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """P(up) for contiguous-in-time ``rows``, read with ``CONTEXT_ROWS`` rows of history before them."""
    lo = max(int(rows[0]) - CONTEXT_ROWS, 0)
    span = np.arange(lo, int(rows[-1]) + 1)
    p = model.predict_proba(X[span])
    return p[rows - lo]


def report(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    return metrics.classification_report(y, p, threshold)


def summary(rep: dict) -> dict:
    return {k: rep[k] for k in SUMMARY_KEYS}


def permutation_importance(ensemble: Ensemble, X: np.ndarray, y: np.ndarray, rows: np.ndarray,
                           seed: int) -> list[float]:
    """AUC drop on the test block when each feature is shuffled there (seeded)."""
    base = metrics.roc_auc(y[rows], predict_block(ensemble, X, rows))
    rng = np.random.default_rng(seed)
    drops = []
    for j in range(X.shape[1]):
        shuffled = X.copy()
        shuffled[rows, j] = shuffled[rng.permutation(rows), j]
        drops.append(base - metrics.roc_auc(y[rows], predict_block(ensemble, shuffled, rows)))
    return drops


def retrain(
    config: AppConfig,
    table: TrainingTable,
    *,
    kinds: Sequence[str] = MEMBERS,
    fixed_params: Mapping[str, Mapping[str, Any]] | None = None,
    selection: dict | None = None,
    timings: Mapping[str, float] | None = None,
    trigger: str = "manual",
    feedback: Mapping[str, Any] | None = None,
) -> CycleResult:
    """Run one cycle (see the module docstring) and return what it found and registered.

    ``fixed_params`` pins params per kind (not tuned), e.g. a small forest in a quick run;
    ``selection`` (the features build's selection dict) is logged as an artefact; ``timings``
    (e.g. the features step's seconds) are added to the cycle's. ``trigger`` (why it ran) is tagged
    ``autoscalp.trigger``; ``feedback`` (the serving champion's live outcomes,
    ``pipeline.monitoring.feedback.champion_feedback``) is logged on the run: reported, not trained on."""
    import mlflow
    from mlflow import MlflowClient

    training = config.training
    started = time.perf_counter()
    optuna_logging_quiet()
    one_torch_thread()
    # 1. everything that can be refused is refused before a run or a model version exists
    uri, experiment_id = tracking.connect(training.tracking)
    split = plan_split(table, config)
    fixed_params = {k: dict(v) for k, v in (fixed_params or {}).items()}
    unknown = sorted(set(fixed_params) - set(MEMBERS))
    if unknown:
        raise TrainingDataError(f"fixed params for unknown model kinds {unknown} (known: {', '.join(MEMBERS)})")
    weights_all = training.weights.model_dump()
    weights = {k: weights_all[k] for k in kinds}
    if abs(sum(weights.values()) - 1.0) > 1e-9:
        total = sum(weights.values())
        weights = {k: w / total for k, w in weights.items()}
    cfg_hash = tracking.config_hash(cycle_config(config))
    study_prefix = f"autoscalp-{symbol_slug(table.symbol)}-{table.dataset[:12]}-{cfg_hash[:8]}"
    tags = {
        "autoscalp.symbol": table.symbol,
        "autoscalp.dataset_fingerprint": table.dataset,
        "autoscalp.features_version": table.features_version,
        "autoscalp.config_hash": cfg_hash,
        "autoscalp.seed": str(training.seed),
        "autoscalp.selection_seed": str(config.features.selection.seed),
        "mlflow.source.git.commit": tracking.git_sha(),
        "autoscalp.git_sha": tracking.git_sha(),
    }
    run_tags = {**tags, "autoscalp.trigger": trigger[:500]}  # the parent run only: not the version's tags
    client = MlflowClient()
    X, y, threshold = table.X, table.y, training.decision_threshold
    times: dict[str, float] = dict(timings or {})
    results: dict[str, dict] = {}
    members: dict[str, Model] = {}

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"retrain {table.symbol}", tags=run_tags) as parent:
        mlflow.log_params({
            "symbol": table.symbol, "rows": table.rows, "features": len(table.feature_names),
            "folds": training.walk_forward.folds, "trials": training.tuning.trials,
            "timeout_s": training.tuning.timeout_s, "tuning_metric": training.tuning.metric,
            "calibration": training.calibration, "refit_weights": training.refit_weights,
            "decision_threshold": threshold, "kinds": ",".join(kinds),
            **{f"split_{k}": v for k, v in split.describe(table.ts_ns).items()},
        })
        mlflow.log_dict({"names": list(table.feature_names), **({"selection": selection} if selection else {})},
                        "features/selected_features.json")
        mlflow.log_dict(config.model_dump(mode="json"), "config/config.json")
        if feedback is not None:
            _log_feedback(feedback)

        for kind in kinds:
            with mlflow.start_run(experiment_id=experiment_id, run_name=kind, nested=True, tags={**tags, "autoscalp.model": kind}) as run:
                t0 = time.perf_counter()
                tuned = tune(kind, X, y, table.ts_ns, table.exit_ts_ns, split.tuning_folds, training,
                             study_name=f"{study_prefix}-{kind}", fixed_params=fixed_params.get(kind))
                t1 = time.perf_counter()
                model = make_model(kind, tuned.best_params, seed=training.seed, calibration=training.calibration)
                model.fit(X[split.train], y[split.train], X[split.validation], y[split.validation])
                t2 = time.perf_counter()
                oos = report(y[split.test], predict_block(model, X, split.test), threshold)
                val = report(y[split.validation], predict_block(model, X, split.validation), threshold)
                members[kind] = model
                times[f"tune_{kind}_s"], times[f"fit_{kind}_s"] = t1 - t0, t2 - t1
                results[kind] = {"oos": summary(oos), "validation": summary(val), "params": model.params,
                                 "tuning": asdict(tuned), "fit_info": model.fit_info,
                                 "tune_s": t1 - t0, "fit_s": t2 - t1}
                _log_model_run(client, run.info.run_id, experiment_id, kind, tuned, model, oos, val, t1 - t0, t2 - t1)
                _log_trials(client, experiment_id, run.info.run_id, kind, tuned, training.tuning.storage, tags)

        t0 = time.perf_counter()
        ensemble = Ensemble(members, weights, table.feature_names, table.label_spec, table.features_version)
        default_oos = report(y[split.test], predict_block(ensemble, X, split.test), threshold)
        if training.refit_weights:
            ensemble.refit_weights(X[split.validation], y[split.validation])
            oos = report(y[split.test], predict_block(ensemble, X, split.test), threshold)
        else:
            oos = default_oos
        comparison = compare(results, oos)
        with mlflow.start_run(experiment_id=experiment_id, run_name="ensemble", nested=True, tags={**tags, "autoscalp.model": "ensemble"}) as run:
            drops = permutation_importance(ensemble, X, y, split.test, training.seed)
            # what the daemon compares live features with: the rows the models were fitted on
            reference = reference_bins(X[np.concatenate([split.train, split.validation])], table.feature_names)
            info = _log_ensemble_run(client, run.info.run_id, ensemble, oos, default_oos, results, drops,
                                     comparison, X[split.test[:5]], tags, reference)
            # what it costs the daemon per tick (pipeline.models.compiled.cost), beside its AUC
            cost = serving_cost(CompiledEnsemble(export_ensemble(ensemble)), X[split.test])
            mlflow.log_metrics({f"serve_{k}": v for k, v in cost.items()})
        times["ensemble_s"] = time.perf_counter() - t0

        parent_metrics = {f"{kind}_oos_{k}": v for kind, r in results.items() for k, v in r["oos"].items()}
        parent_metrics |= {f"ensemble_oos_{k}": v for k, v in summary(oos).items()}
        parent_metrics |= {f"cmp_{k}": v for k, v in comparison.items() if not isinstance(v, str)}
        parent_metrics |= {f"time_{k}": v for k, v in times.items()}
        mlflow.log_metrics(tracking.finite_metrics(parent_metrics))
        mlflow.set_tags({"autoscalp.best_single_model": comparison["best_single"],
                         "autoscalp.ensemble_beats_best_single": str(comparison["ensemble_beats_best_auc"])})

        registered = None
        if training.tracking.register_model:
            cost_tags = {"autoscalp.serve_tick_us": f"{cost['tick_us_p50']:.2f}",
                         "autoscalp.serve_tree_steps": str(int(cost["tree_steps"]))}  # fmt: skip
            registered = register_challenger(info.model_uri, table.symbol,
                                             {**tags, **version_tags(table, split, config, oos), **cost_tags},
                                             parent.info.run_id)  # fmt: skip
            mlflow.set_tags({"autoscalp.registered_model": registered.name,
                             "autoscalp.registered_version": str(registered.version)})
        times["cycle_s"] = time.perf_counter() - started
        mlflow.log_metric("time_cycle_s", times["cycle_s"])

    ensemble_result = {"oos": summary(oos), "weights": ensemble.weights, "weights_fit": ensemble.weights_fit,
                       "default_weights_oos": summary(default_oos), "serving_cost": cost}
    return CycleResult(
        symbol=table.symbol, run_id=parent.info.run_id, experiment_id=experiment_id, tracking_uri=uri,
        dataset=table.dataset, rows=table.rows, split=split.describe(table.ts_ns), models=results,
        ensemble=ensemble_result, comparison=comparison, timings=times, registered=registered, tags=tags,
        trigger=trigger, feedback=dict(feedback) if feedback is not None else None, fitted=ensemble,
    )


def one_torch_thread() -> None:
    """Measured here: on a 2-core machine shared with other work, torch's default intra-op threads
    spin against each other and an LSTM trial that takes ~3 s took over 6 minutes. One thread is
    also what serving uses (STACK.md) and what bench/bench_models.py measured."""
    import torch

    torch.set_num_threads(1)


def optuna_logging_quiet() -> None:
    """Trials are in MLflow; Optuna's per-trial INFO lines would bury the CLI's output."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def compare(results: Mapping[str, dict], ensemble_oos: Mapping[str, float]) -> dict:
    """The ensemble against the single model with the best test-block AUC, both ways round."""
    best = max(results, key=lambda k: np.nan_to_num(results[k]["oos"]["auc"], nan=-1.0))
    best_oos = results[best]["oos"]
    return {
        "best_single": best,
        "best_single_auc": best_oos["auc"],
        "ensemble_auc": ensemble_oos["auc"],
        "ensemble_minus_best_auc": ensemble_oos["auc"] - best_oos["auc"],
        "ensemble_minus_best_log_loss": ensemble_oos["log_loss"] - best_oos["log_loss"],
        "ensemble_minus_best_brier": ensemble_oos["brier"] - best_oos["brier"],
        "ensemble_beats_best_auc": bool(ensemble_oos["auc"] > best_oos["auc"]),
    }


# ---- what each run logs -----------------------------------------------------------------------


def _log_feedback(feedback: Mapping[str, Any]) -> None:
    """The serving champion's live outcomes: numbers as ``live_*`` metrics, the rest as params, all
    of it as ``feedback/live.json``."""
    import mlflow

    numbers = {k: v for k, v in feedback.get("metrics", {}).items() if isinstance(v, (int, float))}
    mlflow.log_metrics(tracking.finite_metrics(numbers, "live_"))
    mlflow.log_params({f"live_{k}": str(v)[:500] for k, v in feedback.get("params", {}).items()})
    mlflow.log_dict(dict(feedback), "feedback/live.json")



def _log_model_run(client, run_id: str, experiment_id: str, kind: str, tuned: TuningResult, model: Model,
                   oos: dict, val: dict, tune_s: float, fit_s: float) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    values = {**tracking.finite_metrics(summary(oos), "oos_"), **tracking.finite_metrics(summary(val), "val_"),
              "tuning_best_value": tuned.best_value, "tune_s": tune_s, "fit_s": fit_s,
              **{f"trials_{state.lower()}": n for state, n in tuned.trials.items()}}
    params = {**{f"param_{k}": v for k, v in model.params.items()}, "study": tuned.study_name,
              "tuning_storage": tuned.storage}
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
                     params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    tracking.log_json(client, run_id, {"oos": oos, "validation": val, "fit_info": model.fit_info}, "metrics/report.json")
    tracking.log_png(client, run_id, tracking.reliability_png({kind: oos["reliability"]}, f"{kind}: test block"),
                     "plots/reliability.png")
    tracking.log_png(client, run_id, tracking.confusion_png(oos, kind), "plots/confusion_matrix.png")


def _log_trials(client, experiment_id: str, model_run_id: str, kind: str, tuned: TuningResult,
                storage: str | None, tags: dict[str, str]) -> None:
    """One nested run per Optuna trial (Optuna 5's MLflowCallback is deprecated), and the history."""
    import optuna
    from mlflow.entities import Metric, Param

    study = optuna.load_study(study_name=tuned.study_name, storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    history = []
    for trial in trials:
        run = client.create_run(experiment_id, run_name=f"{kind} trial {trial.number}",
                                tags={**tags, "mlflow.parentRunId": model_run_id, "autoscalp.model": kind,
                                      "autoscalp.trial": str(trial.number), "autoscalp.trial_state": trial.state.name})
        now = int(time.time() * 1000)
        values = {"objective": trial.value} if trial.value is not None else {}
        values |= {f"fold_{i}": s for i, s in enumerate(trial.user_attrs.get("fold_scores", []))}
        values |= {"seconds": trial.user_attrs["seconds"]} if "seconds" in trial.user_attrs else {}
        client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
                         params=[Param(k, str(v)) for k, v in trial.params.items()])
        client.set_terminated(run.info.run_id, "FINISHED" if trial.state.name in ("COMPLETE", "PRUNED") else "FAILED")
        history.append({"number": trial.number, "state": trial.state.name, "value": trial.value,
                        "params": trial.params, **{k: trial.user_attrs.get(k) for k in ("fold_scores", "seconds")}})
    tracking.log_json(client, model_run_id, {"study": tuned.study_name, "metric": tuned.metric, "trials": history},
                      "optuna/history.json")
    tracking.log_png(client, model_run_id, tracking.optuna_history_png(
        [t["value"] for t in history], tuned.metric == "log_loss", f"{kind}: Optuna {tuned.metric}"),
        "optuna/history.png")


def _log_ensemble_run(client, run_id: str, ensemble: Ensemble, oos: dict, default_oos: dict,
                      results: Mapping[str, dict], drops: list[float], comparison: dict, X_example: np.ndarray,
                      tags: dict[str, str], reference: Any = None):  # noqa: ANN202 (MLflow's ModelInfo)
    import mlflow

    mlflow.log_params({f"weight_{k}": v for k, v in ensemble.weights.items()})
    mlflow.log_metrics({**tracking.finite_metrics(summary(oos), "oos_"),
                        **tracking.finite_metrics(summary(default_oos), "default_weights_oos_"),
                        **tracking.finite_metrics({k: v for k, v in comparison.items() if not isinstance(v, str)},
                                                  "cmp_")})
    tracking.log_json(client, run_id, {"oos": oos, "default_weights_oos": default_oos, "weights": ensemble.weights,
                                       "weights_fit": ensemble.weights_fit, "comparison": comparison,
                                       "members_oos": {k: r["oos"] for k, r in results.items()}},
                      "metrics/report.json")
    tracking.log_png(client, run_id, tracking.reliability_png(
        {"ensemble": oos["reliability"]}, "ensemble: test block"), "plots/reliability.png")
    tracking.log_png(client, run_id, tracking.confusion_png(oos, "ensemble"), "plots/confusion_matrix.png")
    names = list(ensemble.feature_names)
    tracking.log_json(client, run_id, dict(zip(names, drops)), "plots/importance.json")
    tracking.log_png(client, run_id, tracking.importance_png(names, drops, "ensemble permutation importance"),
                     "plots/importance.png")
    with tempfile.TemporaryDirectory() as tmp:
        directory = ensemble.save(Path(tmp) / "ensemble")
        return log_ensemble(directory, ensemble, X_example,
                            {"symbol": tags["autoscalp.symbol"], "dataset_fingerprint": tags["autoscalp.dataset_fingerprint"],
                             "git_sha": tags["autoscalp.git_sha"], "model_name": model_name(tags["autoscalp.symbol"])},
                            drift_reference=reference)
