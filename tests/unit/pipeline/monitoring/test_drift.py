"""Drift references: quantile bins of the training rows, saved with a version and read back; PSI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from pipeline.monitoring.drift import (
    DRIFT_REFERENCE_FILE, ReferenceBins, psi, read_reference, reference_bins, save_reference,
)  # fmt: skip


def test_bins_hold_equal_shares_of_the_training_rows_and_survive_a_round_trip(tmp_path):
    X = np.random.default_rng(0).normal(size=(5_000, 3))
    X[::7, 1] = np.nan  # NaN rows are left out of a feature's shares
    reference = reference_bins(X, ("a", "b", "c"))
    assert reference.edges.shape == (3, 9) and reference.expected.shape == (3, 10) and reference.rows == 5_000
    np.testing.assert_allclose(reference.expected, 0.1, atol=2e-3)
    save_reference(reference, tmp_path)
    back = read_reference(tmp_path)
    assert back.names == ("a", "b", "c") and back.rows == 5_000
    np.testing.assert_array_equal(back.edges, reference.edges)
    np.testing.assert_array_equal(back.expected, reference.expected)
    assert not list(tmp_path.glob(".*tmp"))  # written under a temporary name and renamed


def test_no_reference_is_none_and_a_corrupt_one_says_what_does_not_fit(tmp_path):
    assert read_reference(tmp_path) is None
    bad = {"names": ["a", "b"], "edges": [[0.0]], "expected": [[0.5, 0.5]]}
    (tmp_path / DRIFT_REFERENCE_FILE).write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="2 names, edges"):
        read_reference(tmp_path)


def test_a_feature_without_finite_training_values_gets_zero_shares_quietly():
    X = np.c_[np.arange(100.0), np.full(100, np.nan)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reference = reference_bins(X, ("a", "b"), bins=4)
    assert reference.expected[1].sum() == 0.0 and reference.expected[0].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3 names"):
        reference_bins(X, ("a", "b", "c"))


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift():
    expected = np.full((1, 4), 0.25)
    assert psi(expected, expected)[0] == 0.0
    small, large = psi(np.array([[0.3, 0.25, 0.25, 0.2]]), expected), psi(np.array([[0.7, 0.1, 0.1, 0.1]]), expected)
    assert 0 < small[0] < 0.05 < 0.25 < large[0]
    # an empty bin is floored, not infinite
    assert np.isfinite(psi(np.array([[0.0, 0.0, 0.5, 0.5]]), expected)).all()


def test_from_json_accepts_references_without_a_row_count():
    data = {"names": ["a"], "edges": [[0.0]], "expected": [[0.5, 0.5]]}
    assert ReferenceBins.from_json(data).rows == 0
