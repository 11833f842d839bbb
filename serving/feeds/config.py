"""Typed configuration of the exchange feed, apart from the feed itself so that the product config
(``serve.exchange_feed``) loads without importing ccxt."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config import Frozen


class ExchangeFeedConfig(Frozen):
    trades: bool = True
    quotes: bool = Field(True, description="best bid/ask (Binance bookTicker)")
    mark_price: bool = Field(True, description="mark price and funding rate (swaps only)")
    depth: bool = Field(False, description="raw L2 diffs + snapshots (Binance only)")
    depth_rate_ms: Literal[0, 100, 250, 500] = Field(
        100, description="Binance diff-depth update speed; the recorded captures use 0 (unthrottled)"
    )
    depth_snapshot_limit: int = Field(1000, gt=0, description="levels per side of the REST snapshot")
    depth_buffer: int = Field(10_000, gt=0, description="diffs held while a snapshot is fetched")
    backoff_base_s: float = Field(0.5, gt=0, description="first reconnect delay, doubled each failure")
    backoff_max_s: float = Field(30.0, gt=0)
    backoff_jitter: float = Field(0.2, ge=0, le=1, description="each delay is scaled by 1 +/- this, at random")
    stale_after_s: float = Field(10.0, gt=0, description="no message from a symbol for this long: stale")
    stale_check_s: float = Field(1.0, gt=0)
    reconnect_when_stale: bool = True
    max_events: int = Field(10_000, gt=0, description="soft bound of the event buffer (the daemon: serve.queue_soft_limit)")
