"""The ensemble: weighted average, weights re-fitted on the simplex, saved and loaded as one directory."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.config import AppConfig
from pipeline.models.ensemble import DEFAULT_WEIGHTS, Ensemble, fit_ensemble, simplex_weights
from pipeline.training.metrics import log_loss, roc_auc

NAMES = tuple(f"f{i}" for i in range(6))
LABEL_SPEC = {"tp_bps": 5.0, "sl_bps": 5.0, "horizon_seconds": 120.0, "horizon_events": None}


@pytest.fixture(scope="module")
def ensemble(signal_data, quick):
    (X, y), (Xv, yv), _ = signal_data
    return fit_ensemble(X, y, Xv, yv, params=quick, seed=3, feature_names=NAMES, label_spec=LABEL_SPEC,
                        features_version="features-v1")


def test_default_weights_are_the_documented_ones_and_the_configured_ones():
    assert DEFAULT_WEIGHTS == {"logistic": 0.10, "forest": 0.30, "lstm": 0.40, "xgb": 0.20}
    assert AppConfig().training.weights.model_dump() == DEFAULT_WEIGHTS


def test_prediction_is_the_weighted_average_of_the_members(ensemble, signal_data):
    _, _, (Xt, yt) = signal_data
    members = {name: model.predict_proba(Xt) for name, model in ensemble.members.items()}
    expected = sum(DEFAULT_WEIGHTS[name] * p for name, p in members.items())
    np.testing.assert_allclose(ensemble.predict_proba(Xt), expected, rtol=0, atol=1e-12)
    assert roc_auc(yt, ensemble.predict_proba(Xt)) > 0.7


def test_refitted_weights_stay_on_the_simplex_and_are_recorded(signal_data, quick, ensemble):
    _, (Xv, yv), _ = signal_data
    refitted = Ensemble(dict(ensemble.members), dict(DEFAULT_WEIGHTS), NAMES).refit_weights(Xv, yv)
    weights = np.array(list(refitted.weights.values()))
    assert np.all(weights >= 0) and abs(weights.sum() - 1) < 1e-9
    record = refitted.weights_fit
    assert record["rows"] == len(yv) and record["previous_weights"] == DEFAULT_WEIGHTS
    assert record["log_loss_after"] <= record["log_loss_before"] + 1e-12


def test_simplex_weights_find_the_informative_member():
    rng = np.random.default_rng(0)
    truth = rng.random(4000)
    y = (rng.random(4000) < truth).astype(int)
    probas = np.column_stack([truth, rng.random(4000), np.full(4000, 0.5)])
    weights = simplex_weights(probas, y)
    assert weights[0] > 0.9 and abs(weights.sum() - 1) < 1e-12 and np.all(weights >= 0)
    assert log_loss(y, probas @ weights) <= log_loss(y, probas @ np.full(3, 1 / 3))


def test_save_and_load_keep_members_weights_and_metadata(ensemble, signal_data, tmp_path):
    _, _, (Xt, _) = signal_data
    ensemble.save(tmp_path / "ensemble")
    loaded = Ensemble.load(tmp_path / "ensemble")
    np.testing.assert_array_equal(loaded.predict_proba(Xt), ensemble.predict_proba(Xt))
    assert loaded.weights == ensemble.weights
    assert loaded.feature_names == NAMES and loaded.label_spec == LABEL_SPEC
    assert loaded.features_version == "features-v1"
    meta = json.loads((tmp_path / "ensemble" / "ensemble.json").read_text())
    assert meta["members"] == [{"name": name, "kind": name} for name in ("logistic", "forest", "lstm", "xgb")]
    frame = pd.DataFrame(Xt[:, ::-1], columns=NAMES[::-1])  # columns by name, in any order
    # the same numbers; only the memory layout differs (a BLAS dot product may round 1 ulp apart)
    np.testing.assert_allclose(loaded.predict_frame(frame), ensemble.predict_proba(Xt), rtol=0, atol=1e-12)


def test_weights_must_match_the_members_and_sum_to_one(ensemble):
    with pytest.raises(ValueError, match="sum to 1"):
        Ensemble(dict(ensemble.members), {**DEFAULT_WEIGHTS, "xgb": 0.5})
    with pytest.raises(ValueError, match="weights for"):
        Ensemble(dict(ensemble.members), {"logistic": 1.0})
