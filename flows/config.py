"""The whole product's configuration: the pipeline's sections plus the trading engine's, the simulated
venue's, backtests', the promotion gate's, strategy tuning's and the schedule.

It is composed here, at the top of the dependency graph, because the pipeline must not import
the serving layer. One YAML file (conf/base.yaml) configures everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from flows.stack.config import UpConfig
from pipeline.config import AppConfig, Frozen, load_config
from serving.backtest.config import BacktestConfig, PromotionGate, StrategyTuningConfig
from serving.config import EngineConfig
from serving.daemon.config import ServeConfig
from serving.venues.config import VenueConfig


class ScheduleConfig(Frozen):
    """The Prefect deployments `autoscalp schedule` registers and serves (flows/schedule.py)."""

    retrain_every_hours: float = Field(6.0, gt=0, description="interval of the retrain deployment...")
    retrain_cron: str | None = Field(None, description="...or a cron string, which wins when set")
    ingest_every_minutes: float = Field(5.0, gt=0, description="interval of the ingest deployment")
    max_parallel_trainings: int = Field(1, ge=1, description="symbols trained at once in one retrain run")
    work_pool: str | None = Field(
        None, description="null = serve the deployments in the `autoscalp schedule` process; a Prefect work "
        "pool's name = deploy them to that pool, where `prefect worker start --pool NAME` runs them")


class RunnerConfig(Frozen):
    """Where the flows' fan-outs run (feature days, per-symbol trainings): flows/runners.py."""

    kind: Literal["sequential", "threads", "dask"] = Field(
        "threads", description="sequential: one task at a time; threads: a pool in the flow's process "
        "(trainings: schedule.max_parallel_trainings at once); dask: Prefect's Dask task runner")
    dask_address: str | None = Field(
        None, description="kind dask: a running scheduler (tcp://host:8786); null = a LocalCluster per flow run")
    n_workers: int = Field(2, ge=1, description="kind dask without an address: LocalCluster worker processes")

    @model_validator(mode="after")
    def _address_needs_dask(self) -> RunnerConfig:
        if self.dask_address and self.kind != "dask":
            raise ValueError(f"dask_address is set but kind is {self.kind!r}: set kind: dask (or the address to null)")
        return self


class ProductConfig(AppConfig):
    engine: EngineConfig = EngineConfig()
    venue: VenueConfig = VenueConfig()
    backtest: BacktestConfig = BacktestConfig()
    promotion: PromotionGate = PromotionGate()
    strategy_tuning: StrategyTuningConfig = StrategyTuningConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    runner: RunnerConfig = RunnerConfig()
    serve: ServeConfig = ServeConfig()
    up: UpConfig = UpConfig()


def load_product_config(path: str | Path | None = None) -> ProductConfig:
    return load_config(path, ProductConfig)
