"""Typed configuration of backtests and of the promotion gate (defaults embedded; conf/base.yaml
spells them out)."""

from __future__ import annotations

from pydantic import Field

from pipeline.config import Frozen


class BacktestConfig(Frozen):
    """How a backtest replays the store."""

    equity_usdt: float = Field(10_000.0, gt=0, description="starting wallet balance")
    warmup_s: float = Field(900.0, ge=0, description="event time read before the window so features are warm at its start")
    clock_ms: int = Field(100, gt=0, description="the engine's timer (stale data, cancel timeouts) in event time")
    equity_sample_ms: int = Field(1_000, gt=0, description="equity curve resolution (plus every fill)")
    max_leverage: float = Field(20.0, gt=0, description="exchange leverage limit used when the store has no market rules")
    tick_size: float = Field(0.1, gt=0, description="price grid when the store has no market rules (Binance BTCUSDT: 0.1)")
    lot_size: float = Field(0.001, gt=0, description="quantity step when the store has no market rules")
    min_notional_usdt: float = Field(5.0, ge=0)


class PromotionGate(Frozen):
    """What a challenger must show, on the same unseen window as the champion, to be promoted."""

    after_retrain: bool = Field(True, description="run the gate at the end of every retrain flow")
    window_minutes: float = Field(
        1_440.0, gt=0, description="at most this much of the most recent data neither model was fitted on"
    )
    min_window_minutes: float = Field(5.0, ge=0, description="refuse to decide on less unseen data than this")
    min_pnl_margin_usdt: float = Field(0.0, description="challenger net PnL must be >= reference + this")
    max_drawdown_pct: float = Field(10.0, gt=0, description="challenger max drawdown must not exceed this")
    allow_liquidation: bool = Field(False, description="a single liquidation fails the gate unless true")
    min_auc: float = Field(0.5, ge=0, le=1, description="the challenger's out-of-sample AUC from its retrain")
