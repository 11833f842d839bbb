"""Typed configuration of ``autoscalp serve`` (defaults embedded; conf/base.yaml spells them out)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config import Frozen
from serving.daemon.healing import HealingConfig
from serving.feeds.config import ExchangeFeedConfig


class ServeConfig(Frozen):
    """The daemon: where ticks come from, where orders go, what it does on restart and shutdown,
    and where it can be watched and steered (127.0.0.1 by default)."""

    feed: Literal["synthetic", "replay", "exchange"] = Field("synthetic", description="market data source")
    speed: float = Field(1.0, ge=0, description="replay/synthetic: x real time (0: as fast as possible)")
    broker: Literal["paper", "live"] = Field("paper", description="paper: the simulated venue on live ticks")
    live_confirmed: bool = Field(False, description="live orders need this AND --broker live")
    on_restart: Literal["resume", "flatten"] = Field("resume", description="open positions found at start")
    on_shutdown: Literal["keep", "flatten"] = Field("keep", description="positions at SIGTERM/SIGINT")
    host: str = Field("127.0.0.1", description="HTTP health/metrics/control; 0.0.0.0 exposes it")
    http_port: int = Field(8787, ge=0, le=65535, description="0: any free port")
    control_token_env: str = Field("AUTOSCALP_CONTROL_TOKEN", description="env var holding the control token")
    model_poll_s: float = Field(10.0, gt=0, description="how often the registry's champion is checked")
    warmup_events: int = Field(20_000, ge=0, description="recent ticks a new model is warmed on before it trades")
    stale_feed_s: float = Field(5.0, gt=0, description="no market data this long: the feed is restarted")
    clock_ms: int = Field(100, gt=0, description="the engine's timer")
    queue_soft_limit: int = Field(50_000, gt=0, description="buffered events before book updates are conflated")
    feedback_export_s: float = Field(60.0, gt=0, description="journal decisions and fills exported to the store")
    drift_retrain_psi: float = Field(0.25, gt=0, description="max feature PSI above which drift may retrain")
    drift_retrain_after_s: float = Field(600.0, ge=0, description="... when it stays above this long")
    drift_retrain_cooldown_s: float = Field(21_600.0, ge=0, description="at most one drift retrain per this")
    exchange_feed: ExchangeFeedConfig = Field(default_factory=ExchangeFeedConfig,
                                              description="--feed exchange: channels, reconnects, staleness")
    healing: HealingConfig = Field(default_factory=HealingConfig,
                                   description="feed restarts, error bursts, crash-loop back-off")

    @model_validator(mode="after")
    def _not_exposed_without_thought(self) -> ServeConfig:
        if self.broker == "live" and not self.live_confirmed:
            raise ValueError("serve.broker live needs serve.live_confirmed: true (real orders, real money)")
        return self
