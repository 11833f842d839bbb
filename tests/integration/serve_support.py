"""What the `autoscalp serve` integration tests share: a registered champion and engine roles that
warm up in a few hundred ticks."""

from __future__ import annotations

import json
import socket
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import yaml

from pipeline.config import TrackingConfig
from pipeline.models.base import make_model
from pipeline.models.ensemble import Ensemble
from pipeline.training import aliases, tracking
from pipeline.training.registry import log_ensemble, model_name, register_challenger

SYMBOL = "BTC/USDT:USDT"
SLUG = "BTC-USDT-USDT"
FEATURES = ("ret_tick_20", "bookimb_l1", "ofi_tick_100", "rv_tick_50")
# Engine roles with short warm-ups (the defaults need 10,000 trades, ~2.5 s at speed 0 on a busy
# core): a (re)started daemon trades within half a second.
SHORT_WARMUP_ROLES = {"rv_slow": "rv_tick_200", "vol_spike": "volspike_tick_10", "bb_z": "bbz_tick_50",
                      "trend_strength": "trend_tick_50", "vwap_dev": "vwapdev_tick_50"}  # fmt: skip


def config_yaml(serve: dict, engine: dict | None = None) -> str:
    """A config file's text: ``serve``, the short-warm-up engine roles and ``engine`` overrides."""
    return yaml.safe_dump({"serve": serve, "engine": {"features": SHORT_WARMUP_ROLES, **(engine or {})}})


def register_champion(promote: bool = True) -> int:
    """A logistic-only ensemble fitted on random rows, registered (the registry and artefacts in
    $AUTOSCALP_HOME) and promoted to champion; returns its version. Its P(up) means nothing; it is
    finite, so the engine is not held in REDUCING for a model failure."""
    import mlflow

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(FEATURES)))
    y = (X[:, 0] + rng.normal(size=400) > 0).astype(np.int64)
    model = make_model("logistic", None, seed=0).fit(X[:300], y[:300], X[300:], y[300:])
    ensemble = Ensemble({"logistic": model}, {"logistic": 1.0}, feature_names=FEATURES)
    _, experiment = tracking.connect(TrackingConfig())
    with mlflow.start_run(experiment_id=experiment) as run, tempfile.TemporaryDirectory() as tmp:
        info = log_ensemble(ensemble.save(Path(tmp) / "ensemble"), ensemble, np.zeros((2, len(FEATURES))), {})
        version = register_challenger(info.model_uri, SYMBOL, {"autoscalp.sampling": "quote/10"}, run.info.run_id)
    if promote:
        aliases.promote(model_name(SYMBOL), version.version)
    return int(version.version)


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def health(daemon) -> dict:  # noqa: ANN001
    """The daemon's /health, over HTTP."""
    return json.loads(get(f"http://127.0.0.1:{daemon.control.port}/health"))


def metrics(daemon) -> str:  # noqa: ANN001
    return get(f"http://127.0.0.1:{daemon.control.port}/metrics").decode()
