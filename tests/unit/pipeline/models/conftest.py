"""Small synthetic datasets in time order: a planted signal, and pure noise. Tiny model settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# Small enough that the four models fit in ~3 s together on a loaded 2-core machine.
QUICK_PARAMS = {
    "forest": {"n_estimators": 40, "max_depth": 6},
    "xgb": {"n_estimators": 150, "early_stopping_rounds": 15, "max_depth": 3, "learning_rate": 0.1},
    "lstm": {"window": 4, "hidden": 8, "max_epochs": 8, "patience": 3, "batch_size": 128},
}


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


def planted(n: int = 3000, k: int = 6, seed: int = 0, signal: float = 1.0) -> dict[str, np.ndarray]:
    """Rows in time order; P(up) rises with x0, falls with x1 and rises with the previous row's x2
    (what only a model reading the window can use). About 30 % positives (imbalanced)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    lagged = np.r_[0.0, X[:-1, 2]]
    z = signal * (1.2 * X[:, 0] - 0.8 * X[:, 1] + 0.8 * lagged) - 1.0
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return {"X": X, "y": y, "ts_ns": np.arange(n, dtype=np.int64) * 1_000_000_000}


def split(data: dict[str, np.ndarray], train: float = 0.6, validation: float = 0.2):
    n = len(data["y"])
    a, b = int(n * train), int(n * (train + validation))
    X, y = data["X"], data["y"]
    return (X[:a], y[:a]), (X[a:b], y[a:b]), (X[b:], y[b:])


@pytest.fixture(scope="session")
def signal_data():
    return split(planted(seed=0))


@pytest.fixture(scope="session")
def noise_data():
    return split(planted(n=10_000, seed=1, signal=0.0), train=0.4)


@pytest.fixture(scope="session")
def quick():
    """Tiny settings per kind (params to pass to make_model)."""
    return QUICK_PARAMS
