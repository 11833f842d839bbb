"""Batched features and probabilities equal what a live engine computes tick by tick."""

from __future__ import annotations

import numpy as np

from pipeline.features.core import KIND_QUOTE
from serving.backtest.signals import as_compiled, batch_p_up, compute_signals, tick_by_tick_p_up
from serving.config import EngineConfig

from .conftest import MODEL_FEATURES, STRIDE

ROLES = tuple(EngineConfig().features.model_dump().values())


def test_rows_are_the_quotes_and_nan_until_warm(replay, ensemble):
    s = compute_signals(replay.events, ROLES, ensemble, STRIDE)
    assert np.array_equal(s.quote_index, np.flatnonzero(replay.events.kind == KIND_QUOTE))
    assert s.names[: len(ROLES)] == ROLES and set(MODEL_FEATURES) <= set(s.names)
    first = int(np.argmax(s.ok))
    assert first > 0 and s.ok[first:].mean() > 0.99
    assert np.isnan(s.p_up[:first]).all() and np.isnan(s.features[:first]).any(axis=1).all()
    assert ((s.p_up[s.ok] >= 0) & (s.p_up[s.ok] <= 1)).all()


def test_batched_probabilities_equal_tick_by_tick_inference(replay, ensemble):
    s = compute_signals(replay.events, ROLES, ensemble, STRIDE)
    first = int(np.argmax(s.ok))
    X = s.features[first:, [s.names.index(n) for n in MODEL_FEATURES]]
    window = ensemble.members["lstm"].params["window"]
    rows = np.random.default_rng(0).choice(len(X), 60, replace=False)
    for row in [0, 1, STRIDE * window + 3, *rows]:
        live = tick_by_tick_p_up(ensemble, X, STRIDE, int(row), window)
        assert abs(live - s.p_up[first + row]) <= 1e-12, row


def test_each_phase_is_its_own_sequence(ensemble, replay):
    s = compute_signals(replay.events, ROLES, ensemble, STRIDE)
    first = int(np.argmax(s.ok))
    X = s.features[first : first + 400, [s.names.index(n) for n in MODEL_FEATURES]]
    by_phase = batch_p_up(ensemble, X, STRIDE)
    compiled = as_compiled(ensemble)
    # Read as one sequence of consecutive quotes, the LSTM would see other rows.
    assert np.abs(by_phase - compiled.proba_batch(X)).max() > 1e-6
    np.testing.assert_array_equal(by_phase[3::STRIDE], compiled.proba_batch(X[3::STRIDE]))
    # the compiled path the backtest runs is the libraries' within the fidelity tests' bounds
    assert np.abs(by_phase[3::STRIDE] - ensemble.predict_proba(X[3::STRIDE])).max() < 1e-4
