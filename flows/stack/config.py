"""Typed configuration of ``autoscalp up`` (defaults embedded; conf/base.yaml spells them out)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config import Frozen

ComponentName = Literal["prefect", "mlflow", "schedule", "serve"]
ALL_COMPONENTS: tuple[ComponentName, ...] = ("prefect", "mlflow", "schedule", "serve")


class RestartConfig(Frozen):
    """A crashed child is started again after ``initial_s * factor**(n-1)`` seconds (at most ``max_s``),
    n counting its consecutive fast crashes; after ``max_fast_crashes`` of them in a row it is given up."""

    initial_s: float = Field(1.0, gt=0, description="delay before the first restart")
    factor: float = Field(2.0, ge=1, description="each further fast crash multiplies the delay by this")
    max_s: float = Field(60.0, gt=0, description="cap on the delay")
    fast_crash_s: float = Field(60.0, gt=0, description="dying sooner than this after its start is a fast crash")
    max_fast_crashes: int = Field(5, ge=1, description="consecutive fast crashes before the child is given up")

    def delay_s(self, fast_crashes: int) -> float:
        """Seconds to wait before restarting a child after its ``fast_crashes``-th fast crash in a row."""
        return min(self.initial_s * self.factor ** max(fast_crashes - 1, 0), self.max_s)


class UpConfig(Frozen):
    """The local stack on 127.0.0.1: Prefect server, MLflow tracking server, the scheduled deployments
    and the paper daemon, each a supervised process logging to $AUTOSCALP_HOME/logs/<name>.log."""

    components: tuple[ComponentName, ...] = Field(ALL_COMPONENTS, description="what `autoscalp up` starts")
    prefect_port: int = Field(4200, ge=0, le=65535, description="Prefect server and UI (0 or auto: a free port)")
    mlflow_port: int = Field(5000, ge=0, le=65535, description="MLflow tracking server and UI (0 or auto)")
    serve_port: int | None = Field(None, ge=0, le=65535, description="daemon /health; null = serve.http_port (0, auto)")
    health_timeout_s: float = Field(180.0, gt=0, description="a child not healthy this long after its start fails `up`")
    check_interval_s: float = Field(2.0, gt=0, description="how often children are checked")
    stop_grace_s: float = Field(20.0, gt=0, description="SIGTERM, then SIGKILL after this many seconds")
    restart: RestartConfig = RestartConfig()

    @field_validator("prefect_port", "mlflow_port", "serve_port", mode="before")
    @classmethod
    def _auto_is_zero(cls, value: object) -> object:
        return 0 if isinstance(value, str) and value.strip().lower() == "auto" else value

    @model_validator(mode="after")
    def _dependencies(self) -> UpConfig:
        if len(set(self.components)) != len(self.components):
            raise ValueError("up.components lists a component twice")
        if "schedule" in self.components and "prefect" not in self.components:
            raise ValueError("up.components: schedule serves its deployments on the Prefect server: add prefect")
        return self
