"""The whole product's configuration: the pipeline's sections plus the trading engine's, the simulated
venue's, backtests', the promotion gate's, strategy tuning's and the schedule.

It is composed here, at the top of the dependency graph, because the pipeline must not import
the serving layer. One YAML file (conf/base.yaml) configures everything.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

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


class ProductConfig(AppConfig):
    engine: EngineConfig = EngineConfig()
    venue: VenueConfig = VenueConfig()
    backtest: BacktestConfig = BacktestConfig()
    promotion: PromotionGate = PromotionGate()
    strategy_tuning: StrategyTuningConfig = StrategyTuningConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    serve: ServeConfig = ServeConfig()


def load_product_config(path: str | Path | None = None) -> ProductConfig:
    return load_config(path, ProductConfig)
