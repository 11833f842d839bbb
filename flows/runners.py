"""The task runners of the flows' fan-outs (feature days, per-symbol trainings), chosen by the
``runner`` config section when a flow runs, not when it is defined: a deployment run by a worker on
another machine reads its config there and fans out the same way as ``autoscalp train``.

- ``sequential``: one task at a time (a one-thread pool: Prefect 3 has no sequential runner).
- ``threads``: a thread pool in the flow's process, as before this section existed.
- ``dask``: Prefect's Dask task runner (prefect-dask). Without an address it starts a LocalCluster of
  ``n_workers`` processes on 127.0.0.1 for the flow run and stops it after; with ``dask_address`` it
  sends the tasks to a running scheduler, whose workers need autoscalp installed, the same config
  file, ``AUTOSCALP_HOME`` (or the configured store_dir paths) on shared storage, and the MLflow and
  Optuna URLs (conf/DEPLOYMENT.md). Each task reports its own state to the Prefect API.

Tasks receive their inputs by value (pickled): keep them small (config paths, day keys, reports).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.config import RunnerConfig


def task_runner(config: RunnerConfig, max_threads: int | None = None) -> TaskRunner:
    """A new (not yet started) task runner for ``config``; ``max_threads`` caps the ``threads`` kind."""
    if config.kind == "sequential":
        return ThreadPoolTaskRunner(max_workers=1)
    if config.kind == "threads":
        return ThreadPoolTaskRunner(max_workers=max_threads)
    from prefect_dask import DaskTaskRunner

    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    # 127.0.0.1 and no dashboard: nothing listens beyond this machine, and port 8787 is the daemon's.
    cluster = {"n_workers": config.n_workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
               "dashboard_address": None}
    api_url = prefect_api_url()
    if api_url:
        cluster["env"] = {"PREFECT_API_URL": api_url}
    return DaskTaskRunner(cluster_kwargs=cluster)


def prefect_api_url() -> str | None:
    """The API this process reports to: PREFECT_API_URL, else the temporary local server it started.
    LocalCluster workers get it so that their task runs land on the same server (left alone, each
    worker would start a temporary server of its own on the same database)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if url:
        return url
    temporary = SubprocessASGIServer()  # the process's singleton (prefect.client.orchestration.get_client)
    return temporary.api_url if temporary.running else None


def run_each(task: Any, calls: Sequence[Mapping[str, Any]], config: RunnerConfig,
             max_threads: int | None = None) -> list[Any]:  # fmt: skip
    """Run ``task`` once per parameter mapping on the configured runner, inside the current flow run;
    the results in the order of ``calls``. A failed task raises here, as ``future.result()`` does."""
    if not calls:
        return []
    with task_runner(config, max_threads) as runner:
        # what Task.submit does with the flow's own runner (prefect.tasks.Task.submit)
        futures = [runner.submit(task, dict(parameters)) for parameters in calls]
        return [future.result() for future in futures]
