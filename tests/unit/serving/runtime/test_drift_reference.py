"""A version registered with its drift reference is loaded with a drift monitor that the live
features feed (PSI per feature in /metrics); one registered without (or with a broken one) trades
all the same, without drift metrics, and /health says why. Real MLflow registry under the test's home."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import TrackingConfig
from pipeline.monitoring.drift import DRIFT_REFERENCE_FILE, load_reference, reference_bins
from pipeline.training import aliases, tracking
from pipeline.training.registry import log_ensemble, register_challenger
from serving.backtest.signals import feature_rows
from serving.config import EngineConfig
from serving.daemon.config import ServeConfig
from serving.daemon.feedback import Feedback
from serving.events import Quote
from serving.runtime.model import load_runtime
from serving.runtime.telemetry import DriftMonitor, Telemetry
from serving.state.journal import Journal

from .conftest import MODEL_FEATURES, STRIDE, SYMBOL, market_events


def register(ensemble, reference) -> aliases.VersionInfo:  # noqa: ANN001
    import mlflow

    _, experiment_id = tracking.connect(TrackingConfig())
    with mlflow.start_run(experiment_id=experiment_id) as run, tempfile.TemporaryDirectory() as tmp:
        directory = ensemble.save(Path(tmp) / "ensemble")
        info = log_ensemble(directory, ensemble, np.zeros((2, len(MODEL_FEATURES))), {}, drift_reference=reference)
        registered = register_challenger(info.model_uri, SYMBOL, {"autoscalp.sampling": f"quote/{STRIDE}"},
                                         run.info.run_id)  # fmt: skip
    return aliases.resolve(SYMBOL, str(registered.version))


@pytest.fixture()
def feedback(home):
    journal = Journal(home / "daemon.sqlite")
    journal.begin_run(0)
    part = Feedback(SYMBOL, ServeConfig(), Telemetry([SYMBOL]), journal, None, drift_window=2_000, drift_every=1,
                    drift_min_rows=200)  # fmt: skip
    yield part
    journal.close()


@pytest.mark.slow  # ~6 s idle (16 s on 2 busy cores): 45k events replayed so that every role feature warms
def test_the_registered_reference_drives_the_daemons_psi_metrics(feedback, ensemble, events):
    _, values, warm = feature_rows(events, MODEL_FEATURES)
    # the rows the monitor's window will hold (the last 2,000 quotes): live equals training, PSI ~ 0
    reference = reference_bins(values[warm][-2_000:], MODEL_FEATURES)
    info = register(ensemble, reference)
    stored = load_reference(info.uri)
    assert stored.names == MODEL_FEATURES and np.array_equal(stored.edges, reference.edges)

    runtime = feedback.loader(load_runtime)(info, EngineConfig(), STRIDE)
    monitor = feedback.model_changed(runtime, 0)
    assert monitor is not None and feedback.telemetry.drift[SYMBOL] is monitor
    window = []
    for event in market_events(events):  # the daemon's quote path: features, then the monitor
        if type(event) is Quote:
            vector, _, ok = runtime.on_quote(event)
            if ok:
                monitor.observe(vector)
                window.append(vector.copy())
        else:
            runtime.update(event)
    psi = monitor.psi()
    assert set(psi) == set(MODEL_FEATURES) and all(0 <= v < 0.02 for v in psi.values()), psi
    # against the stream's first half (another regime of the simulator) the volatility has drifted
    earlier = reference_bins(values[warm][: warm.sum() // 2], MODEL_FEATURES)
    moved = DriftMonitor(earlier, runtime.names, window=2_000, every=1, min_rows=200)
    for vector in window[-2_000:]:  # the same live window
        moved.observe(vector)
    assert moved.max_psi()[0] > 0.25 and moved.psi()["rv_tick_50"] > 0.25
    text = feedback.telemetry.exposition().decode()
    assert f'autoscalp_feature_psi{{feature="ret_tick_20",symbol="{SYMBOL}"}}' in text
    assert f'autoscalp_feature_psi_max{{symbol="{SYMBOL}"}}' in text
    drift = feedback.telemetry.health()["drift"][SYMBOL]
    assert drift["feature"] in MODEL_FEATURES and drift["rows"] >= 200


def test_a_version_without_or_with_a_broken_reference_loads_without_drift(feedback, ensemble):
    old = register(ensemble, None)  # as registered before references were stored
    runtime = feedback.loader(load_runtime)(old, EngineConfig(), STRIDE)
    assert runtime.compiled is not None and feedback.model_changed(runtime, 0) is None
    assert feedback.telemetry.health()["drift"][SYMBOL] == {
        "note": f"no drift reference: {old.name} v{old.version} was registered without one"}
    assert "autoscalp_feature_psi{" not in feedback.telemetry.exposition().decode()

    import mlflow.artifacts

    [compiled] = Path(mlflow.artifacts.download_artifacts(old.uri)).rglob("compiled")
    (compiled.parent / DRIFT_REFERENCE_FILE).write_text("{not json")  # a reference that cannot be read
    feedback.prepare(old, runtime.names)
    assert feedback.model_changed(runtime, 0) is None
    assert feedback.telemetry.health()["drift"][SYMBOL]["note"].startswith("no drift reference: JSONDecodeError")
