"""Ingest flow: one retried task per source unit (a file, or a symbol of the exchange/simulator).

Runs on Prefect's temporary local server when PREFECT_API_URL is unset, and against a running
Prefect server when it is set. Bad input (AutoscalpError) is not retried; network outages (TransientSourceError) are.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.config import load_product_config
from pipeline.data.ingest import ingest
from pipeline.data.sources import SourceSpec, build_source, plan_sources
from pipeline.data.store import TickStore
from pipeline.errors import AutoscalpError, TransientSourceError
from pipeline.home import autoscalp_home


def _transient(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect's retry_condition_fn signature)
    """Retry crashes and network outages; bad input will not get better by retrying."""
    error = state.data
    return isinstance(error, TransientSourceError) or not isinstance(error, AutoscalpError)


@task(
    name="ingest-source",
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=_transient,
    cache_policy=NO_CACHE,
    task_run_name="ingest {spec.source}:{spec.target}",
)
def ingest_source(spec: SourceSpec, config_path: str | None) -> dict:
    config = load_product_config(config_path)
    store = TickStore(config.data.store_dir or autoscalp_home().store)
    return ingest(build_source(spec, config), store, config.quality).to_dict()


@flow(name="ingest", log_prints=True)
def ingest_flow(
    source: str | None = None,
    paths: list[str] | None = None,
    symbols: list[str] | None = None,
    exchange: str | None = None,
    config_path: str | None = None,
) -> list[dict]:
    """Ingest ticks from ``source`` (synthetic | files | exchange; default from config) into the store."""
    config = load_product_config(config_path)
    specs = plan_sources(config, source, tuple(paths or ()), tuple(symbols or ()), exchange)
    futures = [ingest_source.submit(spec, config_path) for spec in specs]
    return [future.result() for future in futures]
