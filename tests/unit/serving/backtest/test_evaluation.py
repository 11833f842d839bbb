"""Backtest-gated promotion on a real MLflow registry: refused, promoted, rolled back, and never
without a champion when something fails midway."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import TrackingConfig
from pipeline.training import aliases, tracking
from pipeline.training.registry import CHALLENGER, log_ensemble, model_name, register_challenger
from serving.backtest import evaluation
from serving.backtest.config import BacktestConfig, PromotionGate
from serving.backtest.data import store_range
from serving.config import EngineConfig
from serving.venues.config import VenueConfig

from .conftest import STRIDE, SYMBOL

NAME = model_name(SYMBOL)
PASS = PromotionGate(min_pnl_margin_usdt=-1e9, max_drawdown_pct=100.0, allow_liquidation=True, min_auc=0.0)
REFUSE = PASS.model_copy(update={"min_pnl_margin_usdt": 1e9})


def configs(gate: PromotionGate) -> evaluation.Configs:
    return evaluation.Configs(EngineConfig(), VenueConfig(), BacktestConfig(warmup_s=300.0), gate, TrackingConfig(),
                              STRIDE)  # fmt: skip


@pytest.fixture()
def register(home, store, ensemble):
    """Register the tiny ensemble as a new challenger, fitted (says its tag) on the first third."""
    import mlflow

    _, experiment_id = tracking.connect(TrackingConfig())  # artefacts under the home, not ./mlruns
    first, last = store_range(store, "synthetic", SYMBOL)
    tags = {"autoscalp.fit_end_ns": str(first + (last - first) // 3), "autoscalp.oos_auc": "0.61",
            "autoscalp.sampling": f"quote/{STRIDE}"}  # fmt: skip

    def new_version() -> int:
        with mlflow.start_run(experiment_id=experiment_id) as run, tempfile.TemporaryDirectory() as tmp:
            directory = ensemble.save(Path(tmp) / "ensemble")
            info = log_ensemble(directory, ensemble, np.zeros((2, len(ensemble.feature_names))), {})
            return register_challenger(info.model_uri, SYMBOL, tags, run.info.run_id).version

    return new_version


def alias(name: str) -> int | None:
    found = aliases.find(SYMBOL, name)
    return found.version if found else None


def test_promotion_flow_refuse_promote_rollback(register, store):
    v1 = register()
    first = evaluation.evaluate_and_promote(store, SYMBOL, configs(PASS))
    assert first.promote and first.reference.startswith("baseline")  # no champion yet: the baselines
    assert (alias(aliases.CHAMPION), alias(CHALLENGER)) == (v1, None)
    start, end = first.window
    fit_end = int(aliases.resolve(SYMBOL, str(v1)).tags["autoscalp.fit_end_ns"])
    assert start == fit_end + 1 and end == store_range(store, "synthetic", SYMBOL)[1] + 1

    v2 = register()
    worse = evaluation.evaluate_and_promote(store, SYMBOL, configs(REFUSE))
    assert not worse.promote and worse.reference == f"champion v{v1}"
    assert any(r.startswith("FAIL: net PnL") for r in worse.reasons)
    assert (alias(aliases.CHAMPION), alias(CHALLENGER)) == (v1, v2)  # untouched
    # the same model on the same window: the champion's backtest is the challenger's
    assert worse.compared_with["champion"]["trade_list_hash"] == worse.challenger["trade_list_hash"]

    better = evaluation.evaluate_and_promote(store, SYMBOL, configs(PASS))
    assert better.promote
    assert (alias(aliases.CHAMPION), alias(aliases.PREVIOUS)) == (v2, v1)

    assert aliases.rollback(NAME) == (v2, v1)
    assert alias(aliases.CHAMPION) == v1


def test_the_evaluation_is_logged_with_its_report(register, store):
    import mlflow

    register()
    evaluation.evaluate_and_promote(store, SYMBOL, configs(PASS))
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`autoscalp.kind` = 'promotion'")
    assert len(runs) == 1 and runs["tags.autoscalp.promoted"].iloc[0] == "true"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs["run_id"].iloc[0], "backtest")}
    assert artifacts == {"backtest/summary.json", "backtest/report.html"}


def test_a_failure_midway_leaves_the_champion_in_place(register, store, monkeypatch):
    v1 = register()
    evaluation.evaluate_and_promote(store, SYMBOL, configs(PASS))
    register()
    calls = []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the champion's backtest
            raise MemoryError("killed")
        return real(*args, **kwargs)

    real = evaluation.backtest_version
    monkeypatch.setattr(evaluation, "backtest_version", crash_on_second)
    with pytest.raises(MemoryError):
        evaluation.evaluate_and_promote(store, SYMBOL, configs(PASS))
    assert alias(aliases.CHAMPION) == v1


def test_a_registered_version_carries_its_compiled_form(register):
    """The serving form is exported at registration and evaluates like the library form."""
    import mlflow

    from pipeline.models.compiled import CompiledEnsemble, load_compiled
    from pipeline.training.registry import ARTIFACT_KEY, COMPILED_DIR

    version = register()
    info = aliases.resolve(SYMBOL, str(version))
    local = Path(mlflow.artifacts.download_artifacts(f"{info.uri}"))
    [compiled_dir] = [p for p in local.rglob(COMPILED_DIR) if p.is_dir() and ARTIFACT_KEY in str(p)]
    compiled = CompiledEnsemble(load_compiled(compiled_dir))
    ensemble = aliases.load_ensemble(info)
    X = np.random.default_rng(0).normal(size=(200, len(ensemble.feature_names)))
    assert np.abs(compiled.proba_batch(X) - ensemble.predict_proba(X)).max() < 1e-5
