"""Latency draws, in integer ns, from a seeded numpy Generator: the same seed, the same delays.

Random draws come in blocks (one numpy call per draw costs about a microsecond, a block about ten
nanoseconds a draw); the sequence is the same whatever the block size, so runs are reproducible.
"""

from __future__ import annotations

import numpy as np

from serving.venues.config import ConstantLatency, Latency, LognormalLatency, UniformLatency

_NS_PER_MS = 1_000_000
_BLOCK = 1024


class LatencySampler:
    """``sampler()`` -> the next delay in ns."""

    __slots__ = ("config", "_rng", "_block", "_next")

    def __init__(self, config: Latency, rng: np.random.Generator) -> None:
        self.config, self._rng = config, rng
        self._block: list[int] = []
        self._next = 0
        if isinstance(config, ConstantLatency):
            self._block = [round(config.ms * _NS_PER_MS)]

    def __call__(self) -> int:
        if isinstance(self.config, ConstantLatency):
            return self._block[0]
        if self._next == len(self._block):
            self._block, self._next = self._draw(), 0
        value = self._block[self._next]
        self._next += 1
        return value

    def _draw(self) -> list[int]:
        config = self.config
        if isinstance(config, UniformLatency):
            ms = self._rng.uniform(config.low_ms, config.high_ms, _BLOCK)
        elif isinstance(config, LognormalLatency):
            ms = np.minimum(config.median_ms * np.exp(config.sigma * self._rng.standard_normal(_BLOCK)), config.max_ms)
        else:
            raise TypeError(f"unknown latency model {config!r}")
        return np.rint(ms * _NS_PER_MS).astype(np.int64).tolist()


def samplers(market_data: Latency, order: Latency, seed: int) -> tuple[LatencySampler, LatencySampler]:
    """Independent streams for the two delays, so changing one model leaves the other's draws alone."""
    md_seed, order_seed = np.random.SeedSequence(seed).spawn(2)
    return (LatencySampler(market_data, np.random.default_rng(md_seed)),
            LatencySampler(order, np.random.default_rng(order_seed)))  # fmt: skip
