"""``autoscalp schedule``: the ingest and retrain flows as Prefect deployments with schedules, served
in this process (``prefect.serve``: no work pool or worker to set up). Against a Prefect server
(PREFECT_API_URL) the deployments and their runs show in its UI; the same flows can instead be
deployed to a work pool with workers on other machines, by configuration, without code changes.
"""

from __future__ import annotations

from datetime import timedelta

from flows.config import ProductConfig
from flows.ingest import ingest_flow
from flows.retrain import retrain_flow_for

INGEST_DEPLOYMENT = "ingest"
RETRAIN_DEPLOYMENT = "retrain"


def deployments(config: ProductConfig, config_path: str | None) -> list:
    """The two deployments: ingest every ``ingest_every_minutes``; retrain by ``retrain_cron`` when set,
    else every ``retrain_every_hours`` (the retrain run builds features first; ingest runs apart)."""
    schedule = config.schedule
    parameters = {"config_path": config_path}
    ingest = ingest_flow.to_deployment(
        name=INGEST_DEPLOYMENT, interval=timedelta(minutes=schedule.ingest_every_minutes), parameters=parameters,
    )
    timing = ({"cron": schedule.retrain_cron} if schedule.retrain_cron
              else {"interval": timedelta(hours=schedule.retrain_every_hours)})
    retrain = retrain_flow_for(config).to_deployment(name=RETRAIN_DEPLOYMENT, parameters=parameters, **timing)
    return [ingest, retrain]


def serve_deployments(config: ProductConfig, config_path: str | None) -> None:
    from prefect import serve

    serve(*deployments(config, config_path), limit=config.schedule.max_parallel_trainings + 1)
