"""``autoscalp schedule``: the ingest and retrain flows as Prefect deployments with schedules.

- ``schedule.work_pool: null`` (default): served in this process (``prefect.serve``: no work pool or
  worker to set up) until Ctrl-C.
- ``schedule.work_pool: NAME``: deployed to that work pool (created as a ``process`` pool if the
  server has none of that name) and the command returns; ``prefect worker start --pool NAME`` on any
  machine with autoscalp installed runs them. The deployments name their flows by module path
  (``flows.retrain.retrain_flow``), not by file or source checkout: each worker imports the installed
  package, so nothing is pulled or built, and the workers' own environment (AUTOSCALP_HOME,
  MLFLOW_TRACKING_URI, secrets) reaches the flow runs. conf/DEPLOYMENT.md has the whole layout.

Against a Prefect server (PREFECT_API_URL) the deployments and their runs show in its UI.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.deployments.runner import EntrypointType

from flows.config import ProductConfig
from flows.ingest import ingest_flow
from flows.retrain import retrain_flow_for

INGEST_DEPLOYMENT = "ingest"
RETRAIN_DEPLOYMENT = "retrain"


def deployments(config: ProductConfig, config_path: str | None,
                entrypoint_type: EntrypointType = EntrypointType.FILE_PATH) -> list:  # fmt: skip
    """The two deployments: ingest every ``ingest_every_minutes``; retrain by ``retrain_cron`` when set,
    else every ``retrain_every_hours`` (the retrain run builds features first; ingest runs apart)."""
    schedule = config.schedule
    parameters = {"config_path": config_path}
    ingest = ingest_flow.to_deployment(
        name=INGEST_DEPLOYMENT, interval=timedelta(minutes=schedule.ingest_every_minutes), parameters=parameters,
        entrypoint_type=entrypoint_type,
    )
    timing = ({"cron": schedule.retrain_cron} if schedule.retrain_cron
              else {"interval": timedelta(hours=schedule.retrain_every_hours)})
    retrain = retrain_flow_for(config).to_deployment(name=RETRAIN_DEPLOYMENT, parameters=parameters,
                                                     entrypoint_type=entrypoint_type, **timing)
    return [ingest, retrain]


def deploy_to_pool(config: ProductConfig, config_path: str | None) -> list[UUID]:
    """Register both deployments on ``schedule.work_pool`` (creating a process pool if there is none);
    returns their ids. Their runs wait in the pool until a worker polls it."""
    from prefect import deploy

    pool = config.schedule.work_pool
    if not pool:
        raise ValueError("schedule.work_pool is not set: `autoscalp schedule` serves the deployments itself")
    ensure_process_pool(pool)
    return deploy(*deployments(config, config_path, EntrypointType.MODULE_PATH), work_pool_name=pool,
                  build=False, push=False, print_next_steps_message=False, ignore_warnings=True)


def ensure_process_pool(name: str) -> bool:
    """Create the work pool as a ``process`` pool unless the server has it (of any type); True if created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    # the template `prefect work-pool create --type process` gives: env, working_dir, command...
    template = ProcessWorker.get_default_base_job_template()
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
        except ObjectAlreadyExists:
            return False
    return True


def serve_deployments(config: ProductConfig, config_path: str | None) -> None:
    from prefect import serve

    serve(*deployments(config, config_path), limit=config.schedule.max_parallel_trainings + 1)
