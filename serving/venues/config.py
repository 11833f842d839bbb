"""Typed, frozen configuration of the simulated venue, defaults embedded and their sources named.

Units are in the names: ``_rate`` is a fraction (0.0002 = 0.02 %), ``_bps`` basis points of price,
``_ms`` event-time milliseconds, ``_usdt`` quote currency. The venue resolves this into plain numbers
once, at construction.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from pipeline.config import Frozen


class FeeConfig(Frozen):
    """Binance USD-M futures, regular user (VIP 0), USDT-margined: maker 0.0200 %, taker 0.0500 %.
    A negative maker rate is a rebate (``Fill.fee_usdt`` < 0)."""

    maker_rate: float = Field(0.0002, gt=-0.01, lt=0.01)
    taker_rate: float = Field(0.0005, ge=0, lt=0.01)


class ConstantLatency(Frozen):
    kind: Literal["constant"] = "constant"
    ms: float = Field(0.0, ge=0)


class UniformLatency(Frozen):
    kind: Literal["uniform"] = "uniform"
    low_ms: float = Field(ge=0)
    high_ms: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> UniformLatency:
        if self.high_ms < self.low_ms:
            raise ValueError("high_ms must be at least low_ms")
        return self


class LognormalLatency(Frozen):
    """exp(N(ln median, sigma)), capped at ``max_ms``: network delays are right-skewed."""

    kind: Literal["lognormal"] = "lognormal"
    median_ms: float = Field(gt=0)
    sigma: float = Field(0.5, ge=0)
    max_ms: float = Field(1_000.0, gt=0)


Latency = Annotated[Union[ConstantLatency, UniformLatency, LognormalLatency], Field(discriminator="kind")]


class LatencyConfig(Frozen):
    """An order or cancel the engine decides on an event of exchange time t reaches the matching
    engine at t + market_data + order: the engine saw the event ``market_data`` late and its
    message took ``order`` to arrive. Reports (fills, cancels) travel back on the same delayed
    stream as market data, so in the engine's frame they need no delay of their own.

    The defaults are assumptions, not measurements: a bot hosted near the exchange (Binance's
    matching engine is in AWS Tokyo), a few ms for market data and a right-skewed ~10 ms for an
    order. Replace them with the daemon's measured figures."""

    order: Latency = LognormalLatency(median_ms=10.0, sigma=0.5, max_ms=250.0)
    market_data: Latency = ConstantLatency(ms=5.0)
    seed: int = Field(0, description="seeds the latency draws: the same seed, the same run")


class ImpactConfig(Frozen):
    """A taker order walks the book: the quoted touch, then the depth levels when the driver
    gives them, then, beyond what is known, a synthetic book: a level every
    ``level_spacing_ticks`` ticks, each holding ``level_size_fraction`` x the touch's displayed
    size. Defaults from one REST depth snapshot of Binance USD-M BTCUSDT (2024-08-08 23:54 UTC,
    ../shared/data/binance_ws_raw): beyond the touch, levels about 4 ticks apart held about a
    tenth of the touch's median size each (one snapshot: a rough calibration).

    What may fill beyond ``max_slippage_bps`` from the touch expires instead, like Binance's
    market-order price protection."""

    level_spacing_ticks: float = Field(4.0, gt=0)
    level_size_fraction: float = Field(0.1, gt=0)
    max_slippage_bps: float = Field(100.0, gt=0)


class QueueConfig(Frozen):
    """A resting order at the touch queues behind its displayed size; one behind the touch,
    where no depth tells its level's size, behind ``behind_touch_fraction`` x the displayed size
    of its side's touch (an assumption: the level is about as full as the touch)."""

    behind_touch_fraction: float = Field(1.0, ge=0)


class FundingConfig(Frozen):
    """``schedule``: the venue settles funding itself every ``interval_h`` hours from 00:00 UTC
    (Binance: 00, 08, 16 UTC) at ``rate`` and the mid; ``data``: the driver calls ``on_funding``
    with the recorded rate and mark. The default rate is Binance's baseline with a zero premium:
    the 0.03 %/day interest rate over three settlements = 0.01 %."""

    source: Literal["schedule", "data"] = "schedule"
    interval_h: int = Field(8, ge=1, le=24)
    rate: float = Field(0.0001, gt=-0.05, lt=0.05)


class MarginTier(Frozen):
    """One row of Binance's leverage bracket table: from ``floor_usdt`` of position notional, at
    most ``max_leverage``; maintenance margin = notional x ``maint_margin_rate`` -
    ``maint_amount_usdt`` (Binance's "cum")."""

    floor_usdt: float = Field(ge=0)
    max_leverage: float = Field(ge=1)
    maint_margin_rate: float = Field(gt=0, lt=1)
    maint_amount_usdt: float = Field(ge=0)


def _tiers(*rows: tuple[float, float, float, float]) -> tuple[MarginTier, ...]:
    return tuple(MarginTier(floor_usdt=f, max_leverage=x, maint_margin_rate=m, maint_amount_usdt=c)
                 for f, x, m, c in rows)  # fmt: skip


# Binance USD-M BTCUSDT brackets as published in 2023 (GET /fapi/v1/leverageBracket); Binance
# revises them now and then: check the current table for a live comparison.
BTCUSDT_TIERS = _tiers(
    (0, 125, 0.004, 0),
    (50_000, 100, 0.005, 50),
    (600_000, 75, 0.0065, 950),
    (3_000_000, 50, 0.01, 11_450),
    (12_000_000, 25, 0.02, 131_450),
    (70_000_000, 20, 0.025, 481_450),
    (100_000_000, 10, 0.05, 2_981_450),
    (230_000_000, 5, 0.10, 14_481_450),
    (480_000_000, 4, 0.125, 26_481_450),
    (600_000_000, 3, 0.15, 41_481_450),
    (800_000_000, 2, 0.25, 121_481_450),
    (1_200_000_000, 1, 0.50, 421_481_450),
)  # fmt: skip


class MarginConfig(Frozen):
    """Isolated margin: the bracket table (per symbol, else ``tiers``), the leverage of a symbol
    nobody set (Binance's default, 20x) and the liquidation clearance fee.

    The clearance fee rate is an assumption (Binance sets it per symbol and has changed it: its
    older FAQ said 0.3 % for BTCUSDT, later figures are above 1 %). It only splits the loss: a
    liquidated isolated position loses its whole margin either way, the fee being capped by what
    is left of it."""

    tiers: tuple[MarginTier, ...] = BTCUSDT_TIERS
    tiers_by_symbol: dict[str, tuple[MarginTier, ...]] = Field(default_factory=dict)
    default_leverage: float = Field(20.0, ge=1)
    liquidation_fee_rate: float = Field(0.0125, ge=0, lt=0.1)

    @model_validator(mode="after")
    def _brackets(self) -> MarginConfig:
        for name, tiers in (("tiers", self.tiers), *self.tiers_by_symbol.items()):
            check_tiers(name, tiers)
        return self


def check_tiers(name: str, tiers: tuple[MarginTier, ...]) -> None:
    """Floors rise from 0; the maintenance amount keeps the maintenance margin continuous:
    cum_n = cum_(n-1) + floor_n x (mmr_n - mmr_(n-1)) (Binance's definition)."""
    if not tiers or tiers[0].floor_usdt != 0 or tiers[0].maint_amount_usdt != 0:
        raise ValueError(f"{name}: the first tier starts at 0 notional with maintenance amount 0")
    for low, high in zip(tiers, tiers[1:]):
        if not (high.floor_usdt > low.floor_usdt and high.maint_margin_rate >= low.maint_margin_rate
                and high.max_leverage <= low.max_leverage):  # fmt: skip
            raise ValueError(f"{name}: tiers must rise in floor and rate and fall in max leverage")
        cum = low.maint_amount_usdt + high.floor_usdt * (high.maint_margin_rate - low.maint_margin_rate)
        if abs(cum - high.maint_amount_usdt) > 1e-6 * max(1.0, cum):
            raise ValueError(f"{name}: maintenance amount at {high.floor_usdt:g} should be {cum:g}")


class VenueConfig(Frozen):
    """The simulated venue (serving/venues/simulated.py): Binance USD-M by default."""

    fees: FeeConfig = FeeConfig()
    latency: LatencyConfig = LatencyConfig()
    impact: ImpactConfig = ImpactConfig()
    queue: QueueConfig = QueueConfig()
    funding: FundingConfig = FundingConfig()
    margin: MarginConfig = MarginConfig()
