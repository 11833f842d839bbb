"""The retrain cycle on in-memory tables: a planted signal is found, noise is not, the registered
pyfunc loads in a fresh process and predicts what the in-process ensemble does, bad input is refused
before any model version exists, and a failed alias leaves no version behind.

Real MLflow (the embedded SQLite store under a fresh AUTOSCALP_HOME) and Optuna: marked slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import AppConfig
from pipeline.errors import AutoscalpError
from pipeline.training.cycle import retrain
from pipeline.training.data import TrainingDataError, load_table, table_from_frame
from pipeline.training.registry import model_name, symbol_slug

pytestmark = pytest.mark.slow

SYMBOL = "BTC/USDT:USDT"
NAMES = [f"x{i}" for i in range(6)]
QUICK = {
    "forest": {"n_estimators": 40, "max_depth": 6},
    "xgb": {"n_estimators": 150, "early_stopping_rounds": 15, "max_depth": 3},
    "lstm": {"window": 4, "hidden": 8, "max_epochs": 6, "patience": 2, "batch_size": 256},
}


@pytest.fixture(autouse=True)
def _quiet(home, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def planted_frame(n: int = 4000, seed: int = 0, signal: float = 1.0) -> pd.DataFrame:
    """Rows in time order; P(label = +1) rises with x0, falls with x1, rises with the previous row's x2."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NAMES)))
    z = signal * (1.2 * X[:, 0] - 0.8 * X[:, 1] + 0.8 * np.r_[0.0, X[:-1, 2]]) - 1.0
    up = rng.random(n) < 1.0 / (1.0 + np.exp(-z))
    frame = pd.DataFrame(X, columns=NAMES)
    frame["ts_ns"] = np.arange(n, dtype=np.int64) * 1_000_000_000
    frame["label"] = np.where(up, 1, rng.choice([-1, 0], size=n))
    frame["exit_ts_ns"] = frame["ts_ns"] + 5_000_000_000
    return frame


def config(**training) -> AppConfig:
    base = {"tuning": {"trials": 2}, "walk_forward": {"min_train_rows": 200}}
    return AppConfig.model_validate({"training": {**base, **training}})


def versions(home: Path) -> list:
    from mlflow import MlflowClient

    db = home / "mlflow" / "mlflow.db"
    if not db.exists():
        return []
    uri = f"sqlite:///{db}"  # the registry too: an earlier test may have set another one process-wide
    return MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions()


def test_slug_and_model_name():
    assert symbol_slug("BTC/USDT:USDT") == "BTC-USDT-USDT"
    assert model_name("ETH/USD:ETH") == "autoscalp-ETH-USD-ETH"


def test_planted_signal_is_found_registered_and_loads_in_a_fresh_process(home):
    table = table_from_frame(planted_frame(), NAMES, symbol=SYMBOL)
    feedback = {"metrics": {"fills": 3, "hit_rate": 0.6, "net_pnl_usdt": 1.5}, "params": {"champion_version": 7},
                "notes": []}  # the serving champion's live outcomes (pipeline.monitoring.feedback)
    result = retrain(config(), table, fixed_params=QUICK, trigger="drift: psi 0.31 on x0", feedback=feedback)

    print({k: round(v["oos"]["auc"], 4) for k, v in result.models.items()}, result.comparison)
    assert result.ensemble["oos"]["auc"] > 0.7
    assert all(r["oos"]["auc"] > 0.65 for r in result.models.values())
    assert result.registered.name == "autoscalp-BTC-USDT-USDT" and result.registered.version == 1
    assert set(result.comparison) >= {"best_single", "ensemble_minus_best_auc"}

    from mlflow import MlflowClient

    client = MlflowClient()
    children = client.search_runs([result.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{result.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["ensemble", "forest", "logistic", "lstm", "xgb"]
    lstm_run = next(r for r in children if r.info.run_name == "lstm")
    trials = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{lstm_run.info.run_id}'")
    assert len(trials) == 2
    assert {"oos_auc", "oos_log_loss", "oos_brier", "oos_precision", "oos_recall"} <= set(lstm_run.data.metrics)
    artefacts = {a.path for a in client.list_artifacts(lstm_run.info.run_id, "plots")}
    assert artefacts == {"plots/reliability.png", "plots/confusion_matrix.png"}
    parent = client.get_run(result.run_id)
    for tag in ("autoscalp.dataset_fingerprint", "autoscalp.git_sha", "autoscalp.seed", "autoscalp.config_hash"):
        assert parent.data.tags[tag]
    version = client.get_model_version_by_alias(result.registered.name, "challenger")
    assert int(version.version) == 1
    # its serving cost per tick, on the ensemble run and the version (pipeline.models.compiled.cost)
    ensemble_run = next(r for r in children if r.info.run_name == "ensemble")
    cost = result.ensemble["serving_cost"]
    assert 0 < cost["tick_us_p50"] <= cost["tick_us_p99"] and cost["trees"] > 0 and cost["tree_steps"] >= cost["trees"]
    assert ensemble_run.data.metrics["serve_tree_steps"] == cost["tree_steps"]
    assert version.tags["autoscalp.serve_tree_steps"] == str(int(cost["tree_steps"]))
    assert float(version.tags["autoscalp.serve_tick_us"]) == pytest.approx(cost["tick_us_p50"], abs=0.01)
    # why it ran and what the champion did live, on the run; the drift reference, with the version
    assert parent.data.tags["autoscalp.trigger"] == "drift: psi 0.31 on x0" and "autoscalp.trigger" not in version.tags
    assert parent.data.metrics["live_fills"] == 3 and parent.data.metrics["live_hit_rate"] == 0.6
    assert parent.data.params["live_champion_version"] == "7" and result.feedback == feedback
    from pipeline.monitoring.drift import load_reference

    reference = load_reference(f"models:/{result.registered.name}/1")
    assert reference.names == tuple(NAMES) and reference.rows == result.split["train_rows"] + result.split["validation_rows"]
    np.testing.assert_allclose(reference.expected.sum(axis=1), 1.0)

    # a fresh process loads models:/autoscalp-BTC-USDT-USDT@challenger and predicts as the ensemble does
    rows = planted_frame(n=300, seed=5)[NAMES]
    rows.to_parquet(home / "rows.parquet")
    script = (
        "import sys, mlflow, pandas as pd, numpy as np\n"
        "m = mlflow.pyfunc.load_model('models:/autoscalp-BTC-USDT-USDT@challenger')\n"
        "meta = m.metadata.metadata\n"
        "p = np.asarray(m.predict(pd.read_parquet(sys.argv[1])), dtype=float)\n"
        "np.save(sys.argv[2], p)\n"
        "print(meta['feature_names'], meta['features_version'] == '', sorted(meta['label_spec']))\n"
        "print(m.metadata.get_input_schema().input_names())\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"}
    done = subprocess.run([sys.executable, "-c", script, str(home / "rows.parquet"), str(home / "p.npy")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert str(NAMES) in done.stdout
    expected = result.fitted.predict_proba(rows.to_numpy())
    np.testing.assert_allclose(np.load(home / "p.npy"), expected, rtol=0, atol=1e-12)


def test_pure_noise_gives_auc_near_one_half(home):
    table = table_from_frame(planted_frame(n=6000, seed=3, signal=0.0), NAMES, symbol=SYMBOL)
    result = retrain(config(tracking={"register_model": False}), table, kinds=("logistic", "forest", "xgb"),
                     fixed_params=QUICK)
    aucs = {k: v["oos"]["auc"] for k, v in result.models.items()} | {"ensemble": result.ensemble["oos"]["auc"]}
    print(aucs)
    assert all(abs(auc - 0.5) < 0.06 for auc in aucs.values()), aucs
    assert result.registered is None and versions(home) == []


def test_same_data_config_and_seed_give_the_same_metrics(tmp_path, monkeypatch):
    frame = planted_frame(n=2500, seed=4)
    found = []
    for run in range(2):
        monkeypatch.setenv("AUTOSCALP_HOME", str(tmp_path / f"home{run}"))
        table = table_from_frame(frame, NAMES, symbol=SYMBOL)
        result = retrain(config(tracking={"register_model": False}), table, kinds=("logistic", "xgb", "lstm"),
                         fixed_params=QUICK)
        found.append({k: v["oos"] for k, v in result.models.items()} | {"ensemble": result.ensemble["oos"]})
    for kind in found[0]:
        for key, value in found[0][kind].items():
            assert found[1][kind][key] == pytest.approx(value, abs=1e-6, nan_ok=True), (kind, key)


@pytest.mark.parametrize("case", ["empty", "nan", "one_class", "missing_column"])
def test_bad_feature_sets_are_refused_in_one_line(home, case):
    frame = planted_frame(n=3000)
    if case == "empty":
        frame = frame.iloc[:0]
    elif case == "nan":
        frame.loc[100, "x3"] = np.nan
    elif case == "one_class":
        frame["label"] = -1
    else:
        frame = frame.drop(columns=["x2"])
    with pytest.raises(TrainingDataError) as caught:
        retrain(config(), table_from_frame(frame, NAMES, symbol=SYMBOL), fixed_params=QUICK)
    assert "\n" not in str(caught.value)
    assert versions(home) == []


def test_a_corrupt_feature_file_is_refused_in_one_line(home, tmp_path):
    from pipeline.features.store import DayKey, FeatureStore

    store = FeatureStore(home / "features")
    key = DayKey("binanceusdm", SYMBOL, "2024-01-01")
    store.write(key, "abc", planted_frame(n=500), {"rows": 500, "definitions_version": "v"})
    store.path(key, "abc").write_bytes(b"PAR1 truncated")
    partitions = [{"exchange": key.exchange, "symbol": SYMBOL, "date": key.date, "fingerprint": "abc", "rows": 500,
                   "reused": True, "label_counts": {}, "skipped": None}]
    with pytest.raises(TrainingDataError, match="cannot be read") as caught:
        load_table(store, partitions, NAMES, SYMBOL)
    assert "\n" not in str(caught.value)


def test_an_unreachable_tracking_server_fails_fast_before_training(home):
    table = table_from_frame(planted_frame(n=3000), NAMES, symbol=SYMBOL)
    with pytest.raises(AutoscalpError, match="unreachable") as caught:
        retrain(config(tracking={"uri": "http://127.0.0.1:9"}), table, fixed_params=QUICK)
    assert "\n" not in str(caught.value)
    assert versions(home) == []


def test_a_failed_alias_deletes_the_new_version(home, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    def refuse(self, name, alias, version):
        raise MlflowException("alias store is down")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse)
    table = table_from_frame(planted_frame(n=2500), NAMES, symbol=SYMBOL)
    with pytest.raises(AutoscalpError, match="aliasing autoscalp-BTC-USDT-USDT v1"):
        retrain(config(), table, kinds=("logistic", "xgb"), fixed_params=QUICK)
    assert versions(home) == []


def test_result_is_json_serialisable(home):
    table = table_from_frame(planted_frame(n=2500), NAMES, symbol=SYMBOL)
    result = retrain(config(refit_weights=True, tracking={"register_model": False}), table,
                     kinds=("logistic", "xgb"), fixed_params=QUICK)
    data = json.loads(json.dumps(result.to_dict(), default=str))
    assert data["ensemble"]["weights_fit"]["method"].startswith("min log-loss")
    assert abs(sum(data["ensemble"]["weights"].values()) - 1) < 1e-9
