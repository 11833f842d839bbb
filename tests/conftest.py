"""Shared fixtures. Real market data lives outside the product (../shared/data): tests that need it
skip with a reason when it is absent. Point AUTOSCALP_SHARED_DATA at it if it lives elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    candidates = [os.environ.get("AUTOSCALP_SHARED_DATA"), REPO.parent / "shared" / "data", "/work/shared/data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "README.md").is_file():
            return Path(candidate)
    return None


SHARED_DATA = _shared_data_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real exchange data), or skip."""
    if SHARED_DATA is None:
        pytest.skip("real market data (../shared/data) is absent; set AUTOSCALP_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh AUTOSCALP_HOME for one test."""
    root = tmp_path / "home"
    monkeypatch.setenv("AUTOSCALP_HOME", str(root))
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: an earlier test's store must not leak in.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root
