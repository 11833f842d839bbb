"""Typed, frozen configuration of the trading engine, defaults embedded (``conf/engine.yaml`` spells
them out).

Units are in the names: ``_bps`` is basis points of price, ``_ms`` event-time milliseconds,
``_usdt`` quote currency, ``_base`` base coin. The engine resolves all of this into plain floats once,
at construction, so nothing here is read on the hot path.

Feature units follow the feature factory's kernels (``pipeline/features/kernels``): realised
volatilities and ATR are relative (per quote update / per trade), RSI is rescaled to [-1, 1]
((RSI - 50) / 50), Bollinger z, momentum strength and trend strength are unitless z-like statistics,
VWAP deviation and spread are relative, tick volatility is in basis points per quote update, volume
spike is a ratio (1 = usual size), OFI and book imbalance lie in about [-1, 1], efficiency in [0, 1].
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config import Frozen

StrategyName = Literal["market_making", "mean_reversion", "momentum_breakout"]
TrailingMode = Literal["fixed", "atr", "momentum", "volatility", "ml", "tick"]
LeverageMode = Literal["conservative", "aggressive", "adaptive"]


class FeatureRoles(Frozen):
    """Which named feature plays each role; the names are the feature factory's."""

    rv_fast: str = Field("rv_tick_50", description="short realised volatility (relative, per update)")
    rv_slow: str = Field("rv_tick_1000", description="long realised volatility, the vol-shock baseline")
    atr: str = Field("atr_tick_100", description="average true range, relative")
    rsi: str = Field("rsi_tick_100", description="RSI rescaled to [-1, 1]")
    bb_z: str = Field("bbz_tick_200", description="Bollinger z-score")
    vwap_dev: str = Field("vwapdev_tick_200", description="price / VWAP - 1")
    vol_spike: str = Field("volspike_tick_50", description="short / long mean trade size")
    momentum: str = Field("momstr_tick_100", description="momentum strength (signed z)")
    ofi: str = Field("ofi_tick_100", description="order-flow imbalance, about [-1, 1]")
    book_imbalance: str = Field("bookimb_l1", description="(bid_qty - ask_qty) / (bid_qty + ask_qty)")
    spread_rel: str = Field("spreadrel_l1", description="(ask - bid) / mid")
    efficiency: str = Field("effratio_tick_200", description="Kaufman efficiency ratio, [0, 1]")
    trend_strength: str = Field("trend_tick_200", description="t-statistic of drift (signed)")
    tick_vol: str = Field("tickvol_tick_100", description="mean |mid change| per update, bps")


class RegimeConfig(Frozen):
    """Thresholds come in enter/exit pairs: leaving a regime takes a weaker reading than entering
    it, and a new regime must persist ``confirm_ticks`` ticks and the old one have lasted
    ``min_dwell_ms``, so the regime does not flap around a threshold."""

    vol_ratio_enter: float = Field(1.6, gt=0, description="rv_fast / rv_slow that makes it volatile")
    vol_ratio_exit: float = Field(1.25, gt=0)
    trend_efficiency_enter: float = Field(0.35, ge=0, le=1)
    trend_efficiency_exit: float = Field(0.25, ge=0, le=1)
    trend_strength_enter: float = Field(1.5, ge=0, description="|trend t-stat| that makes it trending")
    trend_strength_exit: float = Field(1.0, ge=0)
    range_efficiency_enter: float = Field(0.12, ge=0, le=1, description="efficiency below this: ranging")
    range_efficiency_exit: float = Field(0.2, ge=0, le=1)
    range_strength_max: float = Field(1.0, ge=0, description="|trend t-stat| allowed in a range")
    confirm_ticks: int = Field(20, ge=1)
    min_dwell_ms: int = Field(2_000, ge=0)

    @model_validator(mode="after")
    def _hysteresis(self) -> RegimeConfig:
        easy = (
            self.vol_ratio_exit <= self.vol_ratio_enter
            and self.trend_efficiency_exit <= self.trend_efficiency_enter
            and self.trend_strength_exit <= self.trend_strength_enter
            and self.range_efficiency_exit >= self.range_efficiency_enter
        )
        if not easy:
            raise ValueError("each exit threshold must be on the easy side of its enter threshold")
        return self


class RoutingConfig(Frozen):
    """Strategies allowed in each regime, in priority order: when flat, the first that wants to
    trade gets the symbol. An empty tuple stands aside."""

    normal: tuple[StrategyName, ...] = ("market_making",)
    trending: tuple[StrategyName, ...] = ("momentum_breakout",)
    ranging: tuple[StrategyName, ...] = ("mean_reversion", "market_making")
    volatile: tuple[StrategyName, ...] = ()


class TrailingConfig(Frozen):
    """Trailing take-profit. It arms once the open profit reaches ``activation_bps``; from then the
    exit level trails the best price by a distance set by ``mode``, only ever tightens, and never
    falls below the entry plus ``lock_fraction`` of the best profit seen."""

    mode: TrailingMode = "fixed"
    activation_bps: float = Field(5.0, ge=0)
    lock_fraction: float = Field(0.5, ge=0, le=1)
    fixed_bps: float = Field(8.0, gt=0, description="fixed: the distance; also the fallback of ml")
    atr_mult: float = Field(3.0, gt=0, description="atr: distance = atr_mult x ATR")
    momentum_bps: float = Field(10.0, gt=0, description="momentum: distance while momentum agrees")
    momentum_reversal: float = Field(0.5, ge=0, description="momentum against the position beyond this...")
    momentum_tighten: float = Field(0.3, gt=0, le=1, description="...multiplies the distance by this")
    vol_mult: float = Field(3.0, gt=0, description="volatility: distance = vol_mult x rv_fast x sqrt(horizon)")
    vol_horizon_ticks: int = Field(50, ge=1)
    ml_mult: float = Field(1.0, gt=0, description="ml: distance = ml_mult x predicted move")
    tick_mult: float = Field(4.0, gt=0, description="tick: distance = tick_mult x tick volatility, in ticks")
    min_ticks: int = Field(2, ge=1, description="tick: never closer than this many ticks")
    min_distance_bps: float = Field(1.0, gt=0)
    max_distance_bps: float = Field(100.0, gt=0)


class MarketMakingConfig(Frozen):
    """Quotes both sides around the microprice. Half-spread = max(min, vol_spread_mult x rv_fast);
    the side the book leans against is widened by (1 + imbalance_spread_mult x |book imbalance|).
    The quote centre is shifted by (model_skew x (2 p_up - 1) - inventory_skew x inventory / max
    inventory) half-spreads. The side order flow runs against (|OFI| beyond ``adverse_ofi``) is
    pulled."""

    min_half_spread_bps: float = Field(2.0, gt=0)
    vol_spread_mult: float = Field(10.0, ge=0)
    imbalance_spread_mult: float = Field(0.5, ge=0)
    inventory_skew: float = Field(1.0, ge=0)
    model_skew: float = Field(1.0, ge=0)
    adverse_ofi: float = Field(0.5, gt=0, description="pull the side order flow runs against beyond this")
    adverse_requote: float = Field(
        0.25, gt=0, description="replace a quote at once when it is this share of the half-spread too aggressive"
    )
    passive_requote: float = Field(1.0, gt=0, description="...and only when this share too passive")
    quote_fraction: float = Field(0.2, gt=0, le=1, description="quote size, of the symbol's max notional")
    max_inventory_fraction: float = Field(0.6, gt=0, le=1, description="inventory limit, of max notional")
    stop_loss_bps: float = Field(30.0, gt=0)
    trailing: TrailingConfig = TrailingConfig(mode="tick", activation_bps=6.0)


class MeanReversionConfig(Frozen):
    """Fades an overreaction when at least ``min_confirmations`` of RSI, Bollinger z and VWAP
    deviation are extreme and the model leans the same way (p_up beyond 0.5 by ``model_edge``);
    exits when the Bollinger z is back to ``exit_z`` (the mean), or on the risk rules."""

    rsi_extreme: float = Field(0.5, gt=0, le=1, description="|RSI| (rescaled) beyond this is extreme")
    bb_z_extreme: float = Field(2.0, gt=0)
    vwap_dev_bps: float = Field(10.0, gt=0)
    min_confirmations: int = Field(2, ge=1, le=3)
    model_edge: float = Field(0.03, ge=0, lt=0.5)
    exit_z: float = Field(0.0, description="exit once side x bb_z >= -exit_z: 0 = back at the mean")
    entry_type: Literal["market", "limit"] = "limit"
    entry_timeout_ms: int = Field(2_000, gt=0, description="cancel an unfilled limit entry after this")
    order_fraction: float = Field(0.5, gt=0, le=1, description="entry size, of the symbol's max notional")
    stop_loss_bps: float = Field(25.0, gt=0)
    trailing: TrailingConfig = TrailingConfig(mode="volatility")


class MomentumBreakoutConfig(Frozen):
    """Enters when price breaks the Bollinger band (``breakout_z``), confirmed by a volume spike,
    momentum strength and the model, all in one direction; exits when momentum reverses beyond
    ``exit_momentum``, or on the risk rules."""

    breakout_z: float = Field(2.0, gt=0)
    vol_spike_min: float = Field(1.5, gt=0)
    momentum_min: float = Field(1.0, gt=0)
    min_efficiency: float = Field(0.2, ge=0, le=1)
    model_edge: float = Field(0.05, ge=0, lt=0.5)
    exit_momentum: float = Field(1.0, ge=0)
    entry_type: Literal["market", "limit"] = "market"
    entry_timeout_ms: int = Field(1_000, gt=0)
    order_fraction: float = Field(0.5, gt=0, le=1)
    stop_loss_bps: float = Field(30.0, gt=0)
    trailing: TrailingConfig = TrailingConfig(mode="momentum")


class LeverageConfig(Frozen):
    """Leverage = position notional / equity. Conservative and aggressive are fixed; adaptive is
    ``adaptive_base`` times factors for volatility, spread, depth, model confidence, drawdown and
    win rate, each clamped. Every mode is capped by the exchange's max, the per-symbol cap and the
    portfolio exposure cap; an emergency (vol shock or a new drawdown step) multiplies it by
    ``emergency_factor`` for ``emergency_cooldown_ms`` and trims open positions above it."""

    mode: LeverageMode = "adaptive"
    conservative: float = Field(2.0, gt=0)
    aggressive: float = Field(10.0, gt=0)
    adaptive_base: float = Field(5.0, gt=0)
    adaptive_min: float = Field(0.5, gt=0)
    adaptive_max: float = Field(10.0, gt=0)
    rise_ticks: int = Field(500, ge=1, description="adaptive: EW span of a rise (slow: earn trust back)")
    fall_ticks: int = Field(20, ge=1, description="adaptive: EW span of a fall (fast: emergencies are instant)")
    target_rv: float = Field(2e-5, gt=0, description="rv_fast at which the volatility factor is 1")
    ref_spread_bps: float = Field(1.0, gt=0, description="spreads wider than this scale leverage down")
    ref_depth_usdt: float = Field(100_000.0, gt=0, description="top-of-book depth below this scales down")
    confidence_full: float = Field(0.2, gt=0, description="|2 p_up - 1| at which confidence adds +50 %")
    drawdown_sensitivity: float = Field(10.0, ge=0, description="factor = 1 - sensitivity x drawdown")
    win_rate_window: int = Field(20, ge=1, description="closed trades the win rate looks back over")
    win_rate_gain: float = Field(1.0, ge=0, description="factor = 1 + gain x (win rate - 0.5)")
    win_rate_min_trades: int = Field(5, ge=1)
    symbol_caps: dict[str, float] = Field(default_factory=dict, description="per-symbol cap, by symbol")
    default_symbol_cap: float = Field(10.0, gt=0)
    portfolio_exposure_cap: float = Field(10.0, gt=0, description="sum of |notional| / equity, all symbols")
    vol_shock_ratio: float = Field(3.0, gt=1, description="rv_fast / rv_slow that triggers an emergency")
    drawdown_step_pct: float = Field(2.0, gt=0, description="each new step of drawdown triggers one")
    emergency_factor: float = Field(0.5, gt=0, le=1)
    emergency_cooldown_ms: int = Field(60_000, ge=0)
    trim_tolerance: float = Field(0.1, ge=0, description="positions above cap x (1 + this) are trimmed")


class RiskConfig(Frozen):
    """The veto on every order and the kill switch."""

    position_limits_base: dict[str, float] = Field(default_factory=dict, description="max |position|, by symbol")
    max_notional_usdt: float = Field(100_000.0, gt=0, description="max worst-case notional per symbol")
    max_orders_per_s: int = Field(
        20, ge=1, description="orders in any second beyond which adding ones are refused (exits never are)"
    )
    daily_loss_limit_pct: float = Field(3.0, gt=0, description="of the equity at the start of the UTC day")
    max_drawdown_pct: float = Field(10.0, gt=0, description="from the equity peak; halts until resume()")
    resume_next_day: bool = Field(True, description="a daily-loss halt lifts at the next UTC day")
    liquidation_buffer_bps: float = Field(50.0, gt=0, description="close a position this close to liquidation")
    stale_ms: int = Field(5_000, gt=0, description="no market data for this long -> REDUCING")
    recover_ms: int = Field(10_000, ge=0, description="healthy this long before REDUCING lifts")
    cancel_timeout_ms: int = Field(5_000, gt=0, description="an unconfirmed cancel stops counting after this")
    default_stop_loss_bps: float = Field(30.0, gt=0, description="stop of a position no strategy opened")


class EngineConfig(Frozen):
    features: FeatureRoles = FeatureRoles()
    regime: RegimeConfig = RegimeConfig()
    routing: RoutingConfig = RoutingConfig()
    market_making: MarketMakingConfig = MarketMakingConfig()
    mean_reversion: MeanReversionConfig = MeanReversionConfig()
    momentum_breakout: MomentumBreakoutConfig = MomentumBreakoutConfig()
    leverage: LeverageConfig = LeverageConfig()
    risk: RiskConfig = RiskConfig()
    record_every_tick: bool = Field(
        False, description="emit a decision record on quiet ticks too (else only when something happened)"
    )
    client_id_prefix: str = Field("as", pattern=r"^[A-Za-z0-9_-]{1,12}$", description="unique per run")
