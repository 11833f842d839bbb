"""The champion watcher on a real MLflow registry (SQLite, artefacts under the test's home): a
promotion mid-run is swapped in at a tick boundary without losing a tick; a corrupt artefact and an
unreachable tracking store keep the trading model and raise an alert."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from pipeline.config import SyntheticSourceConfig, TrackingConfig
from pipeline.features.check import synthetic_events
from pipeline.training import aliases, tracking
from pipeline.training.registry import log_ensemble, model_name, register_challenger
from serving.config import EngineConfig
from serving.events import Quote
from serving.runtime.model import ModelRuntime, compiled_ensemble, load_runtime
from serving.runtime.watcher import ChampionWatcher, RecentTicks

from .conftest import ROLES, STRIDE, SYMBOL, market_events

NAME = model_name(SYMBOL)
HISTORY = 40_000  # events in the ring before the watcher starts: every role feature warms on them


@pytest.fixture(scope="module")
def stream():
    return market_events(synthetic_events(SyntheticSourceConfig(seed=9, ticks=70_000), SYMBOL))


@pytest.fixture()
def registry(home, ensemble):
    """Two versions of the tiny ensemble (sampled every STRIDE quotes), v1 champion."""
    import mlflow

    _, experiment_id = tracking.connect(TrackingConfig())
    versions = []
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment_id) as run, tempfile.TemporaryDirectory() as tmp:
            directory = ensemble.save(Path(tmp) / "ensemble")
            info = log_ensemble(directory, ensemble, np.zeros((2, len(ensemble.feature_names))), {})
            versions.append(register_challenger(info.model_uri, SYMBOL, {"autoscalp.sampling": f"quote/{STRIDE}"},
                                                run.info.run_id).version)  # fmt: skip
    aliases.promote(NAME, versions[0])
    return versions


@pytest.fixture()
def watchers():
    started = []
    yield lambda w: started.append(w.start()) or w
    for w in started:
        w.stop()


class Daemon:
    """The trading loop's part: swap at the tick boundary, remember the event, run the model."""

    def __init__(self, watcher: ChampionWatcher, stream) -> None:
        self.watcher, self.stream, self.i = watcher, stream, 0
        self.runtime = watcher.serving
        self.p_up: dict[int, float] = {}  # quote's event index -> P(up)
        self.swaps: list[tuple[int, int | None]] = []
        self.swapping = True

    def step(self) -> None:
        new = self.watcher.swap_ready() if self.swapping else None
        if new is not None:
            self.runtime = new
            self.swaps.append((self.i, new.version.version))
        event = self.stream[self.i]
        self.watcher.recent.append(event)
        if self.runtime is not None:
            if type(event) is Quote:
                self.p_up[self.i] = self.runtime.on_quote(event)[1]
            else:
                self.runtime.on_trade(event)
        self.i += 1

    def run_until(self, done, timeout_s: float = 120.0, pause_s: float = 0.001) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, f"timed out at event {self.i}; alert {self.watcher.alert}"
            self.step()
            time.sleep(pause_s)  # ticks arrive while the watcher works



def test_a_promotion_mid_run_is_swapped_in_without_losing_a_tick(registry, ensemble, stream, watchers, caplog):
    v1, v2 = registry
    recent = RecentTicks(maxlen=len(stream))
    watcher = ChampionWatcher(SYMBOL, TrackingConfig(), poll_s=0.05, recent=recent, backoff_s=(0.05, 0.2))
    daemon = Daemon(watcher, stream)
    for _ in range(HISTORY):  # the daemon has been running without a model
        daemon.step()
    caplog.set_level(logging.INFO, logger="serving.runtime.watcher")
    watchers(watcher)
    daemon.run_until(lambda: daemon.swaps)
    assert daemon.swaps[0][1] == v1 and watcher.alert is None
    assert watcher.status()["version"] == v1 and watcher.model_age_s() >= 0.0
    aliases.promote(NAME, v2)
    daemon.swapping = False  # the daemon is busy: v2 is offered and waits while ticks go on
    daemon.run_until(lambda: watcher.status()["offered"] == v2)
    for _ in range(25):
        daemon.step()
    daemon.swapping = True
    daemon.step()
    assert watcher.last_swap["caught_up_events"] >= 25  # fed to v2 at the swap, on the trading thread
    for _ in range(3 * STRIDE * 4):  # a few more quotes on v2
        daemon.step()
    assert daemon.swaps[1][1] == v2 and watcher.last_swap["from"] == v1 and watcher.last_swap["to"] == v2
    assert any(f"v{v1} -> {NAME} v{v2}" in r.getMessage() for r in caplog.records)
    # v1 and v2 are the same model: every P(up) after the first swap is what a runtime that saw every
    # event computes, so no event was lost or seen twice across the warm-up, the hand-over or the swap
    reference = {}
    runtime = ModelRuntime(ROLES, compiled_ensemble(ensemble), STRIDE)
    for i, event in enumerate(stream[: daemon.i]):
        if type(event) is Quote:
            reference[i] = runtime.on_quote(event)[1]
        else:
            runtime.on_trade(event)
    after = [i for i in daemon.p_up if i >= daemon.swaps[0][0]]
    assert len(after) > 100
    assert all(daemon.p_up[i] == reference[i] for i in after)


def ensemble_dir(version: int) -> Path:
    """The version's ensemble artefact, in the store itself."""
    import mlflow
    from mlflow import MlflowClient

    source = MlflowClient().get_model_version(NAME, str(version)).source  # models:/m-...
    location = mlflow.get_logged_model(source.removeprefix("models:/")).artifact_location
    path = Path(urlparse(location).path) / "artifacts" / "ensemble"
    assert (path / "ensemble.json").is_file(), path
    return path


def corrupt(version: int) -> None:
    (ensemble_dir(version) / "compiled" / "compiled.npz").write_bytes(b"not an npz")


def test_a_version_loads_its_compiled_arrays_or_exports_them_from_its_ensemble(registry, ensemble):
    v1, v2 = registry
    expected = compiled_ensemble(ensemble)
    runtime = loaded(v1)
    assert runtime.version.version == v1 and runtime.stride == STRIDE and runtime.names[: len(ROLES)] == ROLES
    for member, arrays in expected.arrays.items():
        assert all(np.array_equal(arrays[k], runtime.compiled.arrays[member][k]) for k in arrays)
    shutil.rmtree(ensemble_dir(v2) / "compiled")  # registered before registration exported them
    assert np.array_equal(loaded(v2).compiled.pack.f32, expected.pack.f32)
    description = ensemble_dir(v1) / "ensemble.json"
    meta = json.loads(description.read_text())
    description.write_text(json.dumps({**meta, "feature_names": meta["feature_names"][::-1]}))
    with pytest.raises(ValueError, match="compiled arrays for features"):
        loaded(v1)


def loaded(version: int) -> ModelRuntime:
    return load_runtime(aliases.resolve(SYMBOL, str(version)), EngineConfig(), STRIDE)


def test_a_corrupt_artefact_keeps_the_old_model_with_an_alert(registry, stream, watchers):
    v1, v2 = registry
    watcher = watchers(ChampionWatcher(SYMBOL, TrackingConfig(), poll_s=0.05, current=loaded(v1),
                                       backoff_s=(0.05, 0.2)))  # fmt: skip
    daemon = Daemon(watcher, stream)
    corrupt(v2)
    aliases.promote(NAME, v2)
    daemon.run_until(lambda: watcher.failures >= 3)  # retried, with backoff
    assert f"v{v2} failed to load" in watcher.alert and f"still trading {NAME} v{v1}" in watcher.alert
    assert not daemon.swaps and watcher.serving.version.version == v1 and watcher.status()["alert"]
    aliases.rollback(NAME)  # the operator goes back to v1: nothing to load, the alert clears
    daemon.run_until(lambda: watcher.alert is None)
    assert not daemon.swaps


def test_an_unreachable_tracking_store_keeps_trading_with_an_alert(registry, stream, watchers, monkeypatch):
    v1, _ = registry
    watcher = watchers(ChampionWatcher(SYMBOL, TrackingConfig(), poll_s=0.05, current=loaded(v1),
                                       backoff_s=(0.05, 0.2)))  # fmt: skip
    daemon = Daemon(watcher, stream)
    daemon.run_until(lambda: watcher.last_poll_ok is not None)
    store = tracking.tracking_uri(TrackingConfig())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    daemon.run_until(lambda: watcher.alert is not None and watcher.failures >= 2)
    assert "unreachable" in watcher.alert and f"still trading {NAME} v{v1}" in watcher.alert
    ticks = daemon.i
    daemon.run_until(lambda: daemon.i >= ticks + 200)  # trading goes on, on v1
    assert watcher.serving.version.version == v1 and not daemon.swaps
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    daemon.run_until(lambda: watcher.alert is None)


def test_at_start_the_champion_is_offered_at_once_even_with_no_history(registry, stream):
    v1, _ = registry
    watcher = ChampionWatcher(SYMBOL, TrackingConfig(), poll_s=0.05)
    watcher.poll_once()  # synchronous, before the first tick: nothing to replay, nothing to wait for
    runtime = watcher.swap_ready()
    assert runtime.version.version == v1 and watcher.serving is runtime and not runtime.warm
    assert watcher.last_swap["from"] is None and watcher.last_swap["to"] == v1
    watcher.poll_once()  # the champion trades: nothing to do
    assert watcher.swap_ready() is None and watcher.alert is None


def test_recent_ticks_numbers_events_and_reports_gaps():
    recent = RecentTicks(maxlen=3)
    assert recent.since(0) == ([], 0, True)
    for event in "abcde":
        recent.append(event)
    assert recent.since(0) == (["c", "d", "e"], 5, True)  # wrapped: the last three
    assert recent.since(3) == (["d", "e"], 5, True)
    assert recent.since(5) == ([], 5, True)
    assert recent.since(1) == (["c", "d", "e"], 5, False)  # event 2 was dropped
    recent.append("f")
    assert recent.since(4) == (["e", "f"], 6, True)  # across the ring's end
    assert recent.since(3) == (["d", "e", "f"], 6, True)
