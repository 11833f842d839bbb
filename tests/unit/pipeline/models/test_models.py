"""The four models behind one interface: signal found, noise not, calibrated, reproducible, saved without loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.models.base import Calibrator, Model, ProbabilityModel, make_model
from pipeline.models.lstm import LSTMModel
from pipeline.models.xgb import XGBModel
from pipeline.training.metrics import brier, log_loss, reliability, roc_auc

KINDS = ("logistic", "forest", "xgb", "lstm")
SEED = 11


@pytest.fixture(scope="module")
def fitted(signal_data, quick):
    (X, y), (Xv, yv), _ = signal_data
    return {kind: make_model(kind, quick.get(kind), seed=SEED).fit(X, y, Xv, yv) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_finds_a_planted_signal_with_calibrated_probabilities(kind, fitted, signal_data):
    model = fitted[kind]
    assert isinstance(model, ProbabilityModel)
    _, _, (Xt, yt) = signal_data
    p = model.predict_proba(Xt)
    assert p.dtype == np.float64 and p.shape == (len(yt),)
    assert np.all((p > 0) & (p < 1))
    assert roc_auc(yt, p) > 0.7
    # Class weighting skews raw probabilities towards the minority class; calibration undoes it.
    raw = model.raw_proba(Xt)
    assert abs(p.mean() - yt.mean()) < 0.05
    assert brier(yt, p) < brier(yt, raw) or model.calibrator.method == "none"
    assert reliability(yt, p).expected_calibration_error < 0.08
    assert log_loss(yt, p) < log_loss(yt, np.full(len(yt), yt.mean()))


@pytest.mark.parametrize("kind", KINDS)
def test_finds_nothing_in_noise(kind, noise_data, quick):
    (X, y), (Xv, yv), (Xt, yt) = noise_data
    p = make_model(kind, quick.get(kind), seed=SEED).fit(X, y, Xv, yv).predict_proba(Xt)
    assert 0.45 < roc_auc(yt, p) < 0.55


@pytest.mark.parametrize("kind", KINDS)
def test_same_data_params_and_seed_give_the_same_predictions(kind, fitted, signal_data, quick):
    (X, y), (Xv, yv), (Xt, yt) = signal_data
    again = make_model(kind, quick.get(kind), seed=SEED).fit(X, y, Xv, yv)
    p1, p2 = fitted[kind].predict_proba(Xt), again.predict_proba(Xt)
    np.testing.assert_allclose(p2, p1, rtol=0, atol=1e-6)
    assert abs(log_loss(yt, p1) - log_loss(yt, p2)) < 1e-6
    assert again.fit_info == fitted[kind].fit_info


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_give_the_same_predictions(kind, fitted, signal_data, tmp_path):
    _, _, (Xt, _) = signal_data
    model = fitted[kind]
    model.save(tmp_path / kind)
    loaded = Model.load(tmp_path / kind)
    assert type(loaded) is type(model) and loaded.params == model.params
    np.testing.assert_array_equal(loaded.predict_proba(Xt), model.predict_proba(Xt))
    files = {p.name for p in (tmp_path / kind).iterdir()}
    assert "model.json" in files and not any(name.endswith((".pkl", ".pickle", ".joblib")) for name in files)
    assert json.loads((tmp_path / kind / "model.json").read_text())["kind"] == kind


def test_load_checks_the_kind_and_save_replaces_atomically(fitted, tmp_path):
    fitted["logistic"].save(tmp_path / "m")
    with pytest.raises(ValueError, match="holds a logistic model"):
        XGBModel.load(tmp_path / "m")
    fitted["xgb"].save(tmp_path / "m")  # over an existing directory
    assert isinstance(Model.load(tmp_path / "m"), XGBModel)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary directories left


def test_bad_inputs_are_refused(signal_data):
    (X, y), _, _ = signal_data
    with pytest.raises(ValueError, match="unknown params"):
        make_model("forest", {"n_trees": 3})
    with pytest.raises(ValueError, match="NaN"):
        make_model("logistic").fit(np.where(X > 3, np.nan, X), y)
    with pytest.raises(ValueError, match="0/1"):
        make_model("logistic").fit(X, y * 2 - 1)
    with pytest.raises(ValueError, match="features"):
        make_model("logistic").fit(X, y).predict_proba(X[:, :2])
    with pytest.raises(ValueError, match="unknown model kind"):
        make_model("svm")


def test_without_a_validation_fold_the_model_is_uncalibrated(signal_data):
    (X, y), _, (Xt, _) = signal_data
    model = make_model("xgb", {"n_estimators": 20}, seed=SEED).fit(X, y)
    assert model.calibrator.method == "none" and model.fit_info["rounds"] == 20
    np.testing.assert_array_equal(model.predict_proba(Xt), model.raw_proba(Xt))


def test_platt_and_isotonic_calibrators_are_monotone_and_round_trip():
    rng = np.random.default_rng(0)
    raw = rng.random(5000)
    y = (rng.random(5000) < raw**2).astype(int)  # raw over-states the probability
    grid = np.linspace(0, 1, 101)
    for method in ("isotonic", "platt"):
        calibrator = Calibrator.fit(method, raw, y)
        assert np.all(np.diff(calibrator(grid)) >= 0)
        assert brier(y, calibrator(raw)) < brier(y, raw)
        assert Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict()))) == calibrator


def test_xgb_early_stops_on_the_validation_fold(fitted, quick):
    info = fitted["xgb"].fit_info
    assert info["rounds"] < quick["xgb"]["n_estimators"]
    assert info["scale_pos_weight"] > 1.5  # ~30 % positives


@pytest.fixture(scope="module")
def window_lstm(signal_data, quick):
    (X, y), (Xv, yv), _ = signal_data
    return make_model("lstm", {**quick["lstm"], "state": "window"}, seed=SEED).fit(X, y, Xv, yv)


def test_lstm_reads_only_its_window_of_past_rows(window_lstm, signal_data):
    model: LSTMModel = window_lstm
    window = model.params["window"]
    _, _, (Xt, _) = signal_data
    X = Xt[:200].copy()
    p = model.raw_proba(X)  # before the (step-wise, isotonic) calibration, which could hide a change
    i = 100
    changed = X.copy()
    changed[i + 1:] += 5.0  # the future
    changed[: i - window + 1] -= 5.0  # rows older than the window
    assert model.raw_proba(changed)[i] == p[i]
    changed[i - window + 1] += 1.0  # the oldest row in the window does count
    assert model.raw_proba(changed)[i] != p[i]


def test_lstm_pads_the_first_windows_with_the_first_row(window_lstm, signal_data):
    model: LSTMModel = window_lstm
    window = model.params["window"]
    _, _, (Xt, _) = signal_data
    X = Xt[:50]
    padded = np.concatenate([np.repeat(X[:1], window - 1, axis=0), X])
    np.testing.assert_array_equal(model.raw_proba(padded)[window - 1:], model.raw_proba(X))


def test_carried_lstm_reads_every_past_row_and_no_future_one(fitted, signal_data):
    """State carried: row i is the sequence's prefix 0..i run one step per row (what a live model
    taking one step per tick holds), so an old row counts and a future row does not."""
    model: LSTMModel = fitted["lstm"]
    assert model.params["state"] == "carried"
    _, _, (Xt, _) = signal_data
    X = Xt[:300].copy()
    p = model.raw_proba(X)
    for i in (0, 7, 150, 299):
        np.testing.assert_allclose(model.raw_proba(X[: i + 1])[-1], p[i], rtol=0, atol=1e-7)
    changed = X.copy()
    changed[151:] += 5.0
    np.testing.assert_allclose(model.raw_proba(changed)[:151], p[:151], rtol=0, atol=1e-7)
    changed[0] += 1.0  # far older than any window
    assert np.abs(model.raw_proba(changed)[1:10] - p[1:10]).max() > 1e-6


def test_an_lstm_saved_before_the_state_param_reads_windows(window_lstm, signal_data, tmp_path):
    _, _, (Xt, _) = signal_data
    path = window_lstm.save(tmp_path / "m")
    meta = json.loads((path / "model.json").read_text())
    del meta["params"]["state"]
    (path / "model.json").write_text(json.dumps(meta))
    loaded = Model.load(path)
    assert loaded.params["state"] == "window"
    np.testing.assert_array_equal(loaded.predict_proba(Xt), window_lstm.predict_proba(Xt))
    with pytest.raises(ValueError, match="state 'x'"):
        make_model("lstm", {"state": "x"}).fit(Xt[:200], (Xt[:200, 0] > 0).astype(int))


def test_lstm_restores_the_callers_torch_settings(signal_data, quick):
    (X, y), (Xv, yv), _ = signal_data
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    make_model("lstm", {**quick["lstm"], "max_epochs": 1}, seed=SEED).fit(X[:300], y[:300], Xv[:100], yv[:100])
    assert torch.rand(1) == expected
    assert not torch.are_deterministic_algorithms_enabled()
