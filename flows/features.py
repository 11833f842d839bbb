"""Features flow: one task per symbol and day (in parallel on the `runner` config: threads or Dask),
then the selection.

Each day task extracts the candidates (every one fitting the warm-up budget, or the names given)
with look-back for warm-up and look-ahead for the labels, and writes its partition of the feature
store. The store is the cache: a day whose fingerprint (its tick files, the definitions version, the
label and sampling configs, the names) is already stored is not extracted again, and a selection of
the same rows and config is read back. It lives in the store rather than in Prefect's result cache
so that it also holds without Prefect (``--no-prefect``) and survives a reset Prefect database.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.config import load_product_config
from flows.runners import run_each
from pipeline.data.store import TickStore
from pipeline.errors import AutoscalpError
from pipeline.features.dataset import (
    PartitionRecord, build_day, candidate_names, dataset_fingerprint, days_have_depth, plan_days, select_features,
)
from pipeline.features.store import DayKey, FeatureStore
from pipeline.home import autoscalp_home


def _not_bad_input(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect's retry_condition_fn signature)
    """Retry crashes (e.g. a file being replaced under us); bad input will not get better."""
    return not isinstance(state.data, AutoscalpError)


def stores(config_path: str | None) -> tuple[TickStore, FeatureStore]:
    config = load_product_config(config_path)
    home = autoscalp_home()
    return TickStore(config.data.store_dir or home.store), FeatureStore(config.features.store_dir or home.features)


@task(
    name="feature-day",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_not_bad_input,
    cache_policy=NO_CACHE,
    task_run_name="features {key.symbol} {key.date}",
)
def build_day_task(key: DayKey, names: list[str], config_path: str | None) -> dict:
    ticks, features = stores(config_path)
    return build_day(ticks, features, key, names, load_product_config(config_path)).to_dict()


@task(name="select-features", cache_policy=NO_CACHE)
def select_task(records: list[dict], names: list[str], config_path: str | None) -> dict:
    _, features = stores(config_path)
    built = [PartitionRecord.from_dict(r) for r in records]
    return select_features(features, built, names, load_product_config(config_path)).to_dict()


def build_report(records: list[dict], selection: dict, features_root: str) -> dict:
    built = [PartitionRecord.from_dict(r) for r in records]
    return {
        "store": features_root,
        "dataset": dataset_fingerprint(built),
        "partitions": records,
        "selection": selection,
    }


@flow(name="features", log_prints=True)
def features_flow(
    symbols: list[str] | None = None,
    names: list[str] | None = None,
    config_path: str | None = None,
) -> dict:
    """Build the feature store for ``symbols`` (default: every symbol in the tick store) and select."""
    config = load_product_config(config_path)
    ticks, features = stores(config_path)
    days = plan_days(ticks, symbols)
    candidates = candidate_names(config, names, depth=days_have_depth(ticks, days))
    calls = [{"key": key, "names": candidates, "config_path": config_path} for key in days]
    records = run_each(build_day_task, calls, config.runner)
    selection = select_task(records, candidates, config_path)
    return build_report(records, selection, str(features.root))


def build_in_process(symbols: list[str] | None, names: list[str] | None, config_path: str | None) -> dict:
    """The same steps as ``features_flow``, without Prefect (one day after the other)."""
    config = load_product_config(config_path)
    ticks, features = stores(config_path)
    days = plan_days(ticks, symbols)
    candidates = candidate_names(config, names, depth=days_have_depth(ticks, days))
    records = [build_day(ticks, features, key, candidates, config).to_dict() for key in days]
    selection = select_features(features, [PartitionRecord.from_dict(r) for r in records], candidates, config)
    return build_report(records, selection.to_dict(), str(features.root))
