"""`autoscalp serve` end to end, in process: a replay of stored ticks through the champion, the
engine and the paper broker; a new champion promoted mid-run is swapped in without dropping a tick;
/health and /metrics answer over HTTP; the journal and the paper venue agree afterwards."""

from __future__ import annotations

import json
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from flows.config import ProductConfig
from pipeline.config import QualityConfig, SyntheticSourceConfig, TrackingConfig
from pipeline.data.ingest import ingest
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.data.store import TickStore
from pipeline.models.base import make_model
from pipeline.models.ensemble import Ensemble
from pipeline.monitoring.drift import reference_bins
from pipeline.monitoring.feedback import read_live
from pipeline.training import aliases, tracking
from pipeline.training.registry import log_ensemble, model_name, register_challenger
from serving.backtest.data import load_replay, store_range
from serving.backtest.signals import feature_rows
from serving.daemon.build import build_daemon

SYMBOL = "BTC/USDT:USDT"
FEATURES = ("ret_tick_20", "bookimb_l1", "ofi_tick_100", "rv_tick_50")
TINY = {"forest": {"n_estimators": 8, "max_depth": 4},
        "xgb": {"n_estimators": 20, "early_stopping_rounds": 5, "max_depth": 3, "learning_rate": 0.2},
        "lstm": {"window": 4, "hidden": 4, "max_epochs": 2, "patience": 1, "batch_size": 128}}  # fmt: skip
pytestmark = pytest.mark.slow


def fit_tiny(store: TickStore, seed: int) -> Ensemble:
    first, last = store_range(store, "synthetic", SYMBOL)
    events = load_replay(store, "synthetic", SYMBOL, first, last + 1, 0.0).events
    _, values, warm = feature_rows(events, FEATURES)
    X = values[warm][::10]
    y = (np.diff(X[:, 0], append=0.0) > 0).astype(np.int64)
    split = int(len(X) * 0.7)
    members = {k: make_model(k, TINY.get(k), seed=seed).fit(X[:split], y[:split], X[split:], y[split:])
               for k in ("logistic", "forest", "lstm", "xgb")}  # fmt: skip
    return Ensemble(members, feature_names=FEATURES)


def register(ensemble: Ensemble, reference=None) -> int:  # noqa: ANN001
    import mlflow

    _, experiment = tracking.connect(TrackingConfig())
    with mlflow.start_run(experiment_id=experiment) as run, tempfile.TemporaryDirectory() as tmp:
        directory = ensemble.save(Path(tmp) / "ensemble")
        info = log_ensemble(directory, ensemble, np.zeros((2, len(FEATURES))), {}, drift_reference=reference)
        tags = {"autoscalp.sampling": "quote/10", "autoscalp.oos_auc": "0.6"}
        return register_challenger(info.model_uri, SYMBOL, tags, run.info.run_id).version


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def test_replay_serve_with_a_champion_swap_mid_run(home):
    store = TickStore(home / "store")
    ingest(SyntheticSource(SyntheticSourceConfig(seed=3, ticks=60_000), (SYMBOL,)), store, QualityConfig())
    aliases.promote(model_name(SYMBOL), register(fit_tiny(store, seed=1)))
    second = fit_tiny(store, seed=2)  # fitted before the run: registering it mid-run is fast
    reference = reference_bins(np.random.default_rng(0).normal(size=(1_000, len(FEATURES))), FEATURES)

    config = ProductConfig.model_validate({"data": {"store_dir": str(home / "store")}})
    serve = config.serve.model_copy(update={"feed": "replay", "speed": 100.0, "http_port": 0, "model_poll_s": 0.5})
    daemon = build_daemon(config, serve, SYMBOL)
    assert daemon.watcher.serving is not None and daemon.watcher.serving.version.version == 1
    url = f"http://127.0.0.1:{daemon.control.port}"
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(stats=daemon.run(duration_s=240)))
    runner.start()
    try:
        time.sleep(3)
        health = json.loads(get(f"{url}/health"))
        assert health["state"] == "running" and health["model"]["version"] == 1
        assert health["drift"][SYMBOL]["note"].startswith("no drift reference: ")  # v1 was registered without
        aliases.promote(model_name(SYMBOL), register(second, reference))  # the promotion the watcher must pick up
        deadline = time.monotonic() + 60
        while daemon.stats.swaps == 0 and time.monotonic() < deadline and runner.is_alive():
            time.sleep(0.2)
        metrics = get(f"{url}/metrics").decode()
    finally:
        runner.join(300)
        daemon.control.stop()
    stats = result["stats"]
    assert stats.swaps == 1, daemon.watcher.status()
    assert 'version="2"' in metrics or "autoscalp_model_version" in metrics
    assert "autoscalp_tick_to_decision" in metrics.replace("tick_to_decision_seconds", "tick_to_decision")
    feed = daemon.feed.stats()
    assert feed["dropped"] == 0 and feed["conflated"] == 0
    assert stats.events == daemon.feed.total_events  # every replayed tick reached the engine
    assert feed["delivered"] == feed["received"]  # (the feed's own status events included)
    assert stats.stopped_because == "the feed ended"
    # the journal and the paper venue agree: every fill the venue made was journaled once
    import sqlite3

    [journal_db] = (home / "journal").glob("daemon-*.sqlite")
    [paper_db] = (home / "journal").glob("paper-*.sqlite")
    journal_fills = sqlite3.connect(journal_db).execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    venue_fills = sqlite3.connect(paper_db).execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    assert journal_fills == venue_fills == stats.fills
    notes = sqlite3.connect(journal_db).execute("SELECT text FROM events WHERE kind = 'model'").fetchall()
    assert any("v1 ->" in text and "v2" in text for (text,) in notes), notes
    # v2 came with a drift reference: its PSI per feature is exported from the swap on
    assert f'autoscalp_feature_psi{{feature="ret_tick_20",symbol="{SYMBOL}"}}' in metrics
    # the journal went to the store (at the latest at stop), each row once, with the version that made it
    decisions = read_live(home / "store", "decisions", SYMBOL)
    journal_decisions = sqlite3.connect(journal_db).execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    assert len(decisions) == journal_decisions and len(read_live(home / "store", "fills", SYMBOL)) == stats.fills
    assert set(decisions["model_version"]) <= {1, 2}, decisions["model_version"].value_counts()
