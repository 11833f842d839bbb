"""The engine's view of one tick: the book, the model's output and the features it uses, by role.

Feature names are resolved to indices once, at construction. Per tick the needed values come out
of a numpy feature vector in two C-level calls (``vector[index].tolist()``: ~0.3 µs for 14 of 64,
where indexing value by value costs ~0.1 µs each and gives slow numpy scalars) as Python floats,
which are also what the decision record keeps. Any other sequence goes through an itemgetter.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Callable, Sequence

import numpy as np

from pipeline.errors import AutoscalpError
from serving.config import FeatureRoles

ROLES: tuple[str, ...] = tuple(FeatureRoles.model_fields)


class MissingFeatureError(AutoscalpError):
    """A feature the engine needs is not among the names the feature engine produces."""


def resolve_roles(roles: FeatureRoles, feature_names: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray, Callable]:
    """(the feature names in ROLES order, their indices, a getter: sequence -> tuple of role values)."""
    index = {name: i for i, name in enumerate(feature_names)}
    names = tuple(getattr(roles, role) for role in ROLES)
    missing = [f"{role}={name!r}" for role, name in zip(ROLES, names) if name not in index]
    if missing:
        raise MissingFeatureError(
            f"engine features missing from the feature vector: {', '.join(missing)} "
            f"({len(feature_names)} features given; set engine.features to names that exist)"
        )
    positions = [index[name] for name in names]
    return names, np.array(positions, dtype=np.intp), itemgetter(*positions)


class TickView:
    """Mutable, reused every tick: the strategies, trailing stops and leverage read it."""

    __slots__ = (
        "ts_ns", "bid", "ask", "bid_qty", "ask_qty", "mid", "microprice", "tick_size",
        "p_up", "predicted_move", "finite",
        *ROLES,
    )  # fmt: skip

    def __init__(self) -> None:
        nan = float("nan")
        for name in self.__slots__:
            setattr(self, name, nan)
        self.ts_ns = 0
        self.finite = False

    def set_features(self, values: Sequence[float]) -> None:
        # One unpack in ROLES order; keep it in step with FeatureRoles (a test checks).
        (self.rv_fast, self.rv_slow, self.atr, self.rsi, self.bb_z, self.vwap_dev, self.vol_spike,
         self.momentum, self.ofi, self.book_imbalance, self.spread_rel, self.efficiency,
         self.trend_strength, self.tick_vol) = values  # fmt: skip
        total = sum(values)
        self.finite = total - total == 0.0  # False when any value is NaN or infinite
