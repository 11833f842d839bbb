"""Backtests of registered versions, logged to MLflow, the promotion step built on them, and the
tuning of the strategy parameters a version trades with (serving/backtest/tuning.py).

Each evaluation is one MLflow run (experiment of the tracking config, run name ``backtest ...``,
``promotion ...`` or ``strategy tuning ...``) holding the JSON summary (and the HTML report and the
provenance) as artefacts and the headline figures as metrics, so runs compare side by side in the
MLflow UI.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from pipeline.config import TrackingConfig
from pipeline.data.store import TickStore
from pipeline.features.dataset import uses_depth
from pipeline.training import aliases, tracking
from pipeline.training.registry import model_name
from serving.backtest.config import BacktestConfig, PromotionGate, StrategyTuningConfig
from serving.backtest.data import ReplayData, exchange_of, load_replay, store_range
from serving.backtest.runner import BacktestResult, run_backtest
from serving.backtest.tuning import (PARAMS_TAG, StrategyTuning, StrategyTuningError, apply, params_from_tags,
                                     tune_strategies)
from serving.config import EngineConfig
from serving.metrics import HEADLINE
from serving.promotion import Decision, best_baseline, judge, promotion_window
from serving.report import render_html, write_report
from serving.venues.config import VenueConfig

log = logging.getLogger(__name__)
@dataclass(frozen=True)
class Configs:
    """Everything a backtest depends on besides the data and the model."""

    engine: EngineConfig
    venue: VenueConfig
    backtest: BacktestConfig
    gate: PromotionGate
    tracking: TrackingConfig
    default_stride: int  # the sampling grid for versions registered before it was tagged


def stride_of(info: aliases.VersionInfo | None, default: int) -> int:
    """The LSTM's sampling grid from the version's tag (``quote/10`` -> 10)."""
    tag = (info.tags.get("autoscalp.sampling") if info else None) or ""
    return int(tag.split("/")[-1]) if tag.split("/")[-1].isdigit() else default


def backtest_version(store: TickStore, symbol: str, ref: str | None, start_ns: int | None, end_ns: int | None,
                     configs: Configs, exchange: str | None = None, baselines: bool = True,
                     progress: Callable[[int, int], None] | None = None) -> tuple[BacktestResult, ReplayData]:  # fmt: skip
    """Backtest ``ref`` (an alias, a version, a models:/ URI; None = no model) on [start, end).

    Without ``start_ns`` a version is backtested from just after its fit (``autoscalp.fit_end_ns``),
    when the store holds data after it; otherwise from the first stored tick."""
    exchange = exchange or exchange_of(store, symbol)
    first, last = store_range(store, exchange, symbol)
    end_ns = last + 1 if end_ns is None else end_ns
    ensemble, info = None, None
    if ref is not None:
        tracking.connect(configs.tracking)
        info = aliases.resolve(symbol, ref)
        ensemble = aliases.load_ensemble(info)
    if start_ns is None:  # by default only what the model never saw: in-sample PnL flatters
        fit_end = info.tag_int("autoscalp.fit_end_ns") if info else None
        start_ns = first if fit_end is None or fit_end + 1 >= end_ns else max(first, fit_end + 1)
    depth = ensemble is not None and uses_depth(tuple(ensemble.feature_names))
    data = load_replay(store, exchange, symbol, start_ns, end_ns, configs.backtest.warmup_s, depth)
    model = {"name": info.name, "version": info.version, "uri": info.uri} if info else None
    result = run_backtest(data, ensemble, stride_of(info, configs.default_stride), engine_for(info, configs.engine),
                          configs.venue, configs.backtest, model=model, baselines=baselines, progress=progress)  # fmt: skip
    params = params_from_tags(info.tags) if info else {}
    return replace(result, provenance={**result.provenance, "strategy_params": params or None}), data


def engine_for(info: aliases.VersionInfo | None, engine_config: EngineConfig) -> EngineConfig:
    """The engine configuration a version trades with: ``engine_config`` with the strategy parameters
    it was tuned with (its ``autoscalp.strategy_params`` tag), if any."""
    params = params_from_tags(info.tags) if info else {}
    return apply(engine_config, params) if params else engine_config


def report_html(result: BacktestResult, title: str) -> str:
    baselines = {name: run.summary for name, run in result.baselines.items()}
    return render_html(result.main.summary, result.main.ledger, baselines=baselines, title=title,
                       provenance=result.provenance)  # fmt: skip


def write_backtest_report(result: BacktestResult, path, title: str):  # noqa: ANN001, ANN201
    baselines = {name: run.summary for name, run in result.baselines.items()}
    return write_report(path, result.main.summary, result.main.ledger, baselines=baselines, title=title,
                        provenance=result.provenance)  # fmt: skip


def log_backtest(result: BacktestResult, run_name: str, configs: Configs, extra: dict | None = None,
                 tags: dict | None = None) -> str:  # fmt: skip
    """One MLflow run with the summary, report and provenance; returns its id."""
    import mlflow

    _, experiment_id = tracking.connect(configs.tracking)
    model = result.provenance.get("model") or {}
    run_tags = {"autoscalp.kind": "backtest", "autoscalp.symbol": result.provenance["symbol"],
                "autoscalp.data_fingerprint": result.provenance["data_fingerprint"],
                "autoscalp.config_hash": result.provenance["config_hash"],
                "autoscalp.trade_list_hash": str(result.provenance.get("trade_list_hash")),
                "mlflow.source.git.commit": result.provenance["code_version"], **(tags or {})}  # fmt: skip
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        mlflow.log_params({"model": model.get("uri") or "none", "start_ns": result.provenance["start_ns"],
                           "end_ns": result.provenance["end_ns"], "events": result.provenance["events"]})  # fmt: skip
        metrics = {f"bt_{k}": result.main.summary.get(k) for k in HEADLINE}
        for name, base in result.baselines.items():
            metrics |= {f"{name.replace('-', '_')}_{k}": base.summary.get(k) for k in ("net_pnl_usdt", "max_drawdown_pct")}
        mlflow.log_metrics(tracking.finite_metrics(metrics))
        mlflow.log_dict(result.to_json() | (extra or {}), "backtest/summary.json")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "report.html"
            path.write_text(report_html(result, run_name), encoding="utf-8")
            mlflow.log_artifact(str(path), "backtest")
        return run.info.run_id


def evaluate_and_promote(store: TickStore, symbol: str, configs: Configs, force: bool = False,
                         exchange: str | None = None) -> Decision:  # fmt: skip
    """Backtest ``challenger`` and ``champion`` on the same unseen window, judge, move the aliases."""
    tracking.connect(configs.tracking)
    challenger = aliases.resolve(symbol, aliases.CHALLENGER)
    champion = aliases.find(symbol, aliases.CHAMPION)
    exchange = exchange or exchange_of(store, symbol)
    _, last = store_range(store, exchange, symbol)
    fit_ends = [challenger.tag_int("autoscalp.fit_end_ns"), champion.tag_int("autoscalp.fit_end_ns") if champion else None]
    start, end = promotion_window(last, fit_ends, configs.gate)
    chal_result, _ = backtest_version(store, symbol, challenger.uri, start, end, configs, exchange)
    if champion is not None:
        champ_result, _ = backtest_version(store, symbol, champion.uri, start, end, configs, exchange, baselines=False)
        reference_name, reference = f"champion v{champion.version}", champ_result.main.summary
        compared = {"champion": reference}
    else:
        reference_name, reference = best_baseline({k: v.summary for k, v in chal_result.baselines.items()})
        compared = {k: v.summary for k, v in chal_result.baselines.items()}
    auc = _float(challenger.tags.get("autoscalp.oos_auc"))
    passed, reasons = judge(chal_result.main.summary, reference, reference_name, auc, configs.gate)
    if force and not passed:
        reasons += ("forced by the operator (--force)",)
    decision = Decision(passed or force, reasons, reference_name, (start, end), chal_result.main.summary, compared)
    log_backtest(chal_result, f"promotion {symbol} v{challenger.version}", configs,
                 extra={"decision": decision.to_json()},
                 tags={"autoscalp.kind": "promotion", "autoscalp.promoted": str(decision.promote).lower(),
                       "autoscalp.challenger_version": str(challenger.version),
                       "autoscalp.champion_version": str(champion.version) if champion else "none"})  # fmt: skip
    if decision.promote:
        aliases.promote(model_name(symbol), challenger.version)
        log.info("%s v%s promoted to champion (%s)", symbol, challenger.version, "; ".join(reasons))
    else:
        log.info("%s v%s stays challenger: %s", symbol, challenger.version, "; ".join(reasons))
    return decision


def tune_version(store: TickStore, symbol: str, ref: str, start_ns: int | None, end_ns: int | None,
                 configs: Configs, tuning_config: StrategyTuningConfig, exchange: str | None = None,
                 progress: Callable[[int], None] | None = None) -> tuple[StrategyTuning, aliases.VersionInfo]:  # fmt: skip
    """Tune the engine parameters version ``ref`` trades with (``engine_for``: the incumbent) on
    [start, end). The default start is the end of its fit: on the data it was fitted on its P(up) is
    in-sample, and parameters tuned to that would not carry over."""
    exchange = exchange or exchange_of(store, symbol)
    first, last = store_range(store, exchange, symbol)
    tracking.connect(configs.tracking)
    info = aliases.resolve(symbol, ref)
    fit_end = info.tag_int("autoscalp.fit_end_ns")
    end_ns = last + 1 if end_ns is None else end_ns
    if start_ns is None:
        start_ns = first if fit_end is None else max(first, fit_end + 1)
        if start_ns >= end_ns:
            raise StrategyTuningError(f"{info.name} v{info.version} was fitted on the store's data up to its end: "
                                      "nothing unseen to tune on; ingest newer ticks or pass --from")  # fmt: skip
    ensemble = aliases.load_ensemble(info)
    depth = ensemble is not None and uses_depth(tuple(ensemble.feature_names))
    data = load_replay(store, exchange, symbol, start_ns, end_ns, configs.backtest.warmup_s, depth)
    result = tune_strategies(data, ensemble, stride_of(info, configs.default_stride), engine_for(info, configs.engine),
                             configs.venue, configs.backtest, tuning_config, progress)  # fmt: skip
    return result, info


def log_strategy_tuning(result: StrategyTuning, symbol: str, version: aliases.VersionInfo | None,
                        tracking_config: TrackingConfig) -> str:  # fmt: skip
    """One MLflow run (``autoscalp.kind`` = ``strategy_tuning``) with the parameters, the scores and the
    study's history; returns its id. Adopted parameters become the version's ``autoscalp.strategy_params``
    tag (over the ones it already carried), so the version backtests and trades with them from then on."""
    import mlflow

    _, experiment_id = tracking.connect(tracking_config)
    p = result.provenance
    tags = {"autoscalp.kind": "strategy_tuning", "autoscalp.symbol": symbol,
            "autoscalp.adopted": str(result.adopted).lower(),
            "autoscalp.model_version": str(version.version) if version else "none",
            "autoscalp.data_fingerprint": p["data_fingerprint"], "autoscalp.config_hash": p["incumbent_config_hash"],
            "mlflow.source.git.commit": p["code_version"]}  # fmt: skip
    name = f"strategy tuning {symbol}" + (f" v{version.version}" if version else "")
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
        mlflow.log_params({"objective": result.objective, "trials": result.trials["run"], "windows": len(result.windows),
                           "seed": p["tuning"]["seed"], "model": version.uri if version else "none",
                           "start_ns": p["start_ns"], "end_ns": p["end_ns"],
                           **{f"tuned.{k}": v for k, v in result.params.items()}})  # fmt: skip
        mlflow.log_metrics(tracking.finite_metrics({
            "in_window_tuned": result.in_window["tuned"], "in_window_incumbent": result.in_window["incumbent"],
            "held_back_tuned": result.held_back["tuned"], "held_back_incumbent": result.held_back["incumbent"],
            "adopted": float(result.adopted), "deflated_sharpe": result.deflated_sharpe,
            "feasible_trials": result.trials["feasible"], "seconds_per_trial": result.seconds["per_trial_s"]}))  # fmt: skip
        mlflow.log_dict({"adopted": result.adopted, "params": result.params, "incumbent": result.incumbent,
                         "reason": result.reason}, "strategy/params.json")  # fmt: skip
        mlflow.log_dict(result.to_json(), "strategy/tuning.json")
        run_id = run.info.run_id
    if result.adopted and version is not None:
        params = {**params_from_tags(version.tags), **result.params}
        client = mlflow.MlflowClient()
        client.set_model_version_tag(version.name, str(version.version), PARAMS_TAG, json.dumps(params, sort_keys=True))
        client.set_model_version_tag(version.name, str(version.version), "autoscalp.strategy_tuning_run", run_id)
        log.info("%s v%s now trades with tuned strategy parameters (run %s)", version.name, version.version, run_id)
    return run_id


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def dumps(decision: Decision) -> str:
    return json.dumps(decision.to_json(), indent=2, default=str)
