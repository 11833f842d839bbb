"""Metrics agree with scikit-learn's; reliability bins count and average correctly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from pipeline.training.metrics import (
    brier, classification_report, confusion_matrix, log_loss, precision_recall, reliability, roc_auc,
)


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(0)
    p = np.round(rng.random(3000), 2)  # rounded: many ties
    y = (rng.random(3000) < p).astype(int)
    return y, p


def test_agree_with_scikit_learn(scored):
    y, p = scored
    assert roc_auc(y, p) == pytest.approx(sk.roc_auc_score(y, p), abs=1e-12)
    assert log_loss(y, p) == pytest.approx(sk.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)), abs=1e-12)
    assert brier(y, p) == pytest.approx(sk.brier_score_loss(y, p), abs=1e-12)
    np.testing.assert_array_equal(confusion_matrix(y, p, 0.6), sk.confusion_matrix(y, p >= 0.6))
    precision, recall = precision_recall(y, p, 0.6)
    assert precision == pytest.approx(sk.precision_score(y, p >= 0.6))
    assert recall == pytest.approx(sk.recall_score(y, p >= 0.6))


def test_edge_cases_are_nan_not_errors():
    assert np.isnan(roc_auc(np.ones(5), np.linspace(0, 1, 5)))
    assert np.isnan(precision_recall(np.array([0, 1]), np.array([0.1, 0.2]), 0.9)[0])
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5


def test_reliability_bins(scored):
    y, p = scored
    curve = reliability(y, p, bins=10)
    assert curve.count.sum() == len(y) and len(curve.edges) == 11
    inside = (p >= curve.edges[3]) & (p < curve.edges[4])
    assert curve.count[3] == inside.sum()
    assert curve.mean_predicted[3] == pytest.approx(p[inside].mean())
    assert curve.fraction_positive[3] == pytest.approx(y[inside].mean())
    assert curve.expected_calibration_error < 0.05  # y was drawn with probability p
    skewed = reliability(y, np.clip(p + 0.2, 0, 1))
    assert skewed.expected_calibration_error > 0.15
    quantile = reliability(y, p, bins=4, strategy="quantile")
    assert np.all(np.abs(quantile.count - len(y) / 4) < 0.1 * len(y))


def test_report_is_flat_and_json_ready(scored):
    import json

    y, p = scored
    report = classification_report(y, p)
    json.dumps(report)
    assert report["tp"] + report["fp"] + report["tn"] + report["fn"] == len(y)
    assert set(report["reliability"]) >= {"edges", "count", "expected_calibration_error"}
