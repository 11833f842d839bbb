"""Strategies: thin decision rules on a shared base; sizing, orders and risk are the engine's."""

from serving.strategies.base import Strategy
from serving.strategies.market_making import MarketMaking
from serving.strategies.mean_reversion import MeanReversion
from serving.strategies.momentum_breakout import MomentumBreakout

__all__ = ["Strategy", "MarketMaking", "MeanReversion", "MomentumBreakout", "build_strategies"]


def build_strategies(config) -> dict[str, Strategy]:
    """One instance of each strategy from an EngineConfig, by name."""
    return {
        "market_making": MarketMaking(config.market_making),
        "mean_reversion": MeanReversion(config.mean_reversion),
        "momentum_breakout": MomentumBreakout(config.momentum_breakout),
    }
