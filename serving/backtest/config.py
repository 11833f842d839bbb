"""Typed configuration of backtests, of the promotion gate and of strategy tuning (defaults embedded;
conf/base.yaml spells them out)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

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


class ParamRange(Frozen):
    """Where the study searches one engine parameter. An integer parameter (its value in the engine
    config is an int) is searched over the integers of the range."""

    low: float
    high: float
    log: bool = Field(False, description="search on a log scale (both bounds > 0)")

    @model_validator(mode="after")
    def _ordered(self) -> ParamRange:
        if not self.low < self.high:
            raise ValueError(f"low {self.low:g} must be below high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self


def _range(low: float, high: float, log: bool = False) -> ParamRange:
    return ParamRange(low=low, high=high, log=log)


# The trailing distance parameter of each strategy is the one its default ``trailing.mode`` reads
# (market making: tick, mean reversion: volatility, momentum: momentum); change these with the mode.
DEFAULT_STRATEGY_SPACE: dict[str, ParamRange] = {
    "market_making.min_half_spread_bps": _range(0.5, 8.0, log=True),
    "market_making.vol_spread_mult": _range(2.0, 30.0, log=True),
    "market_making.stop_loss_bps": _range(10.0, 80.0, log=True),
    "market_making.trailing.activation_bps": _range(2.0, 20.0),
    "market_making.trailing.tick_mult": _range(1.5, 10.0),
    "mean_reversion.bb_z_extreme": _range(1.2, 3.5),
    "mean_reversion.model_edge": _range(0.0, 0.15),
    "mean_reversion.stop_loss_bps": _range(10.0, 80.0, log=True),
    "mean_reversion.trailing.activation_bps": _range(2.0, 20.0),
    "mean_reversion.trailing.vol_mult": _range(1.0, 8.0),
    "momentum_breakout.breakout_z": _range(1.2, 3.5),
    "momentum_breakout.model_edge": _range(0.0, 0.15),
    "momentum_breakout.stop_loss_bps": _range(10.0, 80.0, log=True),
    "momentum_breakout.trailing.activation_bps": _range(2.0, 20.0),
    "momentum_breakout.trailing.momentum_bps": _range(3.0, 30.0),
    "leverage.adaptive_base": _range(1.0, 10.0),
    "leverage.default_symbol_cap": _range(2.0, 20.0),
}


class StrategyTuningConfig(Frozen):
    """An Optuna study over engine parameters on walk-forward windows (serving/backtest/tuning.py).

    The replay range is cut into ``windows`` + 1 consecutive windows of equal event time; the study
    sees the first ``windows`` only, the last is held back for the adoption gate. A window's score
    is its net PnL in USDT (``net_pnl_usdt``: the study maximises the sum over the windows) or its
    annualised Sharpe (``sharpe``: the mean; no trades = 0). A trial with a liquidation, or with a
    drawdown beyond the engine's ``risk.max_drawdown_pct`` in any window, is infeasible (an Optuna
    constraint): never the best, whatever it earned."""

    trials: int = Field(20, ge=2, description="trials of the study, the incumbent's (trial 0) included")
    windows: int = Field(3, ge=1, description="tuning windows; one more, the latest, is held back")
    seed: int = 7
    objective: Literal["net_pnl_usdt", "sharpe"] = Field(
        "net_pnl_usdt", description="summed net PnL over the windows, or the mean of their Sharpe ratios"
    )
    min_improvement: float = Field(
        0.0, ge=0, description="held-back score the tuned parameters must beat the incumbent's by (objective units)"
    )
    space: dict[str, ParamRange] = Field(
        default_factory=lambda: dict(DEFAULT_STRATEGY_SPACE), description="dotted engine parameter -> range"
    )
