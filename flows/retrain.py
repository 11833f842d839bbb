"""Retrain flow: (ingest new data ->) features -> train each symbol -> backtest-gated promotion.

Wiring only: the steps are pipeline functions (pipeline.features.dataset, pipeline.training.cycle).

- Retries: a crashed training (out of memory, a killed worker) is retried once; bad input
  (an AutoscalpError: empty or one-class feature set, unreachable tracking store) is not.
- Caching: the feature store is the features' cache (flows/features.py). A training task is cached
  on its small inputs (symbol, dataset fingerprint, selection id, config hash, budget): a scheduled
  retrain finding no new data returns the version it registered before instead of registering a
  copy; ``autoscalp train --force`` retrains anyway. Tuning resumes its Optuna study (named after the
  dataset and config) when a crashed cycle is retried.
- Concurrency (flows/runners.py, the ``runner`` config, read when the flow runs): symbols train in a
  thread pool of ``schedule.max_parallel_trainings`` workers (default 1: one training already uses
  both cores), so a retrain over many symbols queues them; or on Dask workers (``runner.kind: dask``).
"""

from __future__ import annotations

import time

from prefect import flow, task
from prefect.cache_policies import INPUTS

from flows.config import ProductConfig, load_product_config
from flows.features import build_in_process, features_flow
from flows.runners import run_each
from pipeline.errors import AutoscalpError
from pipeline.training.cycle import cycle_config, retrain
from pipeline.training.data import load_table
from pipeline.training.tracking import config_hash

TRAIN_TAG = "autoscalp-train"


def _not_bad_input(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect's retry_condition_fn signature)
    return not isinstance(state.data, AutoscalpError)


def with_budget(config: ProductConfig, trials: int | None, timeout_s: float | None) -> ProductConfig:
    """The config with the tuning budget of a command line (``--trials``, ``--timeout``)."""
    if trials is None and timeout_s is None:
        return config
    raw = config.model_dump()
    tuning = raw["training"]["tuning"]
    if trials is not None:
        tuning["trials"] = trials
    if timeout_s is not None:
        tuning["timeout_s"] = timeout_s
    return type(config).model_validate(raw)


def train_symbol(symbol: str, report: dict, config: ProductConfig, features_s: float = 0.0,
                 trigger: str = "manual") -> dict:  # fmt: skip
    """Train and register one symbol from a features build's report (partitions + selection); the
    serving champion's live feedback is logged on the cycle's run (``live_feedback``)."""
    _, features = stores_for(config)
    selection = report["selection"]
    table = load_table(features, report["partitions"], selection["names"], symbol)
    result = retrain(config, table, selection=selection, timings={"features_s": features_s}, trigger=trigger,
                     feedback=live_feedback(symbol, config))  # fmt: skip
    return result.to_dict()


def live_feedback(symbol: str, config: ProductConfig) -> dict:
    """What the serving champion did live since it trades (the daemon's decisions and fills in the
    store, pipeline.monitoring.feedback); never a reason for the retrain to fail."""
    from pipeline.monitoring.feedback import champion_feedback
    from pipeline.training import aliases, tracking

    try:
        tracking.connect(config.training.tracking)
        champion = aliases.find(symbol, aliases.CHAMPION)
        store, _ = stores_for(config)
        return champion_feedback(store.root, symbol, champion.version if champion else None,
                                 champion.name if champion else None)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 (feedback is reported, not required)
        return {"metrics": {}, "params": {}, "notes": [f"live feedback unavailable: {type(exc).__name__}: {exc}"]}


def stores_for(config: ProductConfig):  # noqa: ANN201
    from pipeline.data.store import TickStore
    from pipeline.features.store import FeatureStore
    from pipeline.home import autoscalp_home

    home = autoscalp_home()
    return TickStore(config.data.store_dir or home.store), FeatureStore(config.features.store_dir or home.features)


@task(
    name="train-symbol",
    retries=1,
    retry_delay_seconds=[10],
    retry_condition_fn=_not_bad_input,
    cache_policy=INPUTS - "report" - "config_path" - "features_s" - "trigger",
    tags=[TRAIN_TAG],
    task_run_name="train {symbol}",
)
def train_task(symbol: str, report: dict, config_path: str | None, trials: int | None, timeout_s: float | None,
               dataset: str, selection_id: str, cycle_hash: str, features_s: float,
               trigger: str = "schedule") -> dict:  # fmt: skip
    # dataset, selection_id and cycle_hash are the cache key (with symbol and the budget); the report
    # and the config path are read, not keyed (the report is large, the path says nothing of its content).
    config = with_budget(load_product_config(config_path), trials, timeout_s)
    return train_symbol(symbol, report, config, features_s, trigger)


@task(name="promote-symbol", task_run_name="promote {symbol}")
def promote_task(symbol: str, config_path: str | None) -> dict:
    return promote_symbol(symbol, load_product_config(config_path))


def promote_symbol(symbol: str, config: ProductConfig) -> dict:
    """Backtest the new challenger against the champion on unseen data; move the alias if it passes.
    A gate that cannot be run (no unseen data yet) leaves the challenger where it is and says why."""
    from serving.backtest.evaluation import Configs, evaluate_and_promote as gate

    configs = Configs(config.engine, config.venue, config.backtest, config.promotion, config.training.tracking,
                      config.features.sampling.stride)  # fmt: skip
    store, _ = stores_for(config)
    try:
        return gate(store, symbol, configs).to_json()
    except AutoscalpError as exc:
        return {"promote": False, "reasons": [f"not evaluated: {exc}"]}


def evaluate_and_promote(results: list[dict], config: ProductConfig, config_path: str | None,
                         in_flow: bool = True) -> list[dict]:  # fmt: skip
    """The promotion step: each newly registered challenger through the backtest gate."""
    if not config.promotion.after_retrain:
        return results
    for result in results:
        if result.get("registered"):
            symbol = result["symbol"]
            result["promotion"] = promote_task(symbol, config_path) if in_flow else promote_symbol(symbol, config)
    return results


def symbols_to_train(report: dict, symbols: list[str] | None) -> list[str]:
    built = sorted({p["symbol"] for p in report["partitions"] if p["rows"]})
    return [s for s in built if not symbols or s in symbols]


@flow(name="retrain", log_prints=True, flow_run_name="retrain [{trigger}]")
def retrain_flow(
    symbols: list[str] | None = None,
    trials: int | None = None,
    timeout_s: float | None = None,
    ingest: bool = False,
    force: bool = False,
    config_path: str | None = None,
    trigger: str = "schedule",
) -> list[dict]:
    """Build features for ``symbols`` (default: all in the store), train and register each one.
    ``trigger``: why this run (schedule, manual, or the daemon's "drift: psi 0.31 on <feature> ..."),
    tagged ``autoscalp.trigger`` on each cycle's MLflow run."""
    print(f"retrain {', '.join(symbols) if symbols else 'all symbols'}: triggered by {trigger}")
    if ingest:
        from flows.ingest import ingest_flow

        ingest_flow(symbols=symbols, config_path=config_path)
    config = with_budget(load_product_config(config_path), trials, timeout_s)
    started = time.perf_counter()
    report = features_flow(symbols=symbols, config_path=config_path)
    features_s = time.perf_counter() - started
    cycle_hash = config_hash(cycle_config(config))
    train = train_task.with_options(refresh_cache=True) if force else train_task
    calls = [
        {"symbol": symbol, "report": report, "config_path": config_path, "trials": trials, "timeout_s": timeout_s,
         "dataset": report["dataset"], "selection_id": report["selection"]["id"], "cycle_hash": cycle_hash,
         "features_s": features_s, "trigger": trigger}
        for symbol in symbols_to_train(report, symbols)
    ]
    if not calls:
        raise AutoscalpError("the feature store has no rows for the requested symbols; run `autoscalp ingest`")
    prepare_stores(config)
    results = run_each(train, calls, config.runner, max_threads=config.schedule.max_parallel_trainings)
    return evaluate_and_promote(results, config, config_path)


def prepare_stores(config: ProductConfig) -> None:
    """Create MLflow's and Optuna's tables (and the experiment) once, before the trainings fan out:
    trainings starting together on a fresh PostgreSQL database would race to create them."""
    from pipeline.training.tracking import connect
    from pipeline.training.tuning import open_storage

    connect(config.training.tracking)
    open_storage(config.training.tuning.storage)


def retrain_flow_for(config: ProductConfig):  # noqa: ANN201 (a Prefect Flow)
    """The retrain flow (its fan-out follows the config it is run with: flows/runners.py)."""
    return retrain_flow


def retrain_in_process(symbols: list[str] | None, config: ProductConfig, config_path: str | None) -> list[dict]:
    """The same steps without Prefect (one symbol after the other, nothing cached)."""
    started = time.perf_counter()
    report = build_in_process(symbols, None, config_path)
    features_s = time.perf_counter() - started
    names = symbols_to_train(report, symbols)
    if not names:
        raise AutoscalpError("the feature store has no rows for the requested symbols; run `autoscalp ingest`")
    return evaluate_and_promote([train_symbol(s, report, config, features_s) for s in names], config, config_path,
                                in_flow=False)

