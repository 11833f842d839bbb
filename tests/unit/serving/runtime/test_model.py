"""The live runtime computes, tick by tick, what the backtest computes in batch (serving.backtest.signals)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.models.base import make_model
from pipeline.models.compiled import CompiledEnsemble, export_ensemble
from pipeline.models.ensemble import Ensemble
from serving.backtest.signals import compute_signals, feature_rows, tick_by_tick_p_up
from serving.events import Quote
from serving.runtime.model import ModelRuntime, compiled_ensemble

from .conftest import MODEL_FEATURES, ROLES, STRIDE, TINY, market_events


def run_live(runtime: ModelRuntime, stream) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, p_up, ok) at every quote."""
    vectors, p_up, ok = [], [], []
    for event in stream:
        if type(event) is Quote:
            v, p, good = runtime.on_quote(event)
            vectors.append(v.copy())
            p_up.append(p)
            ok.append(good)
        else:
            runtime.on_trade(event)
    return np.array(vectors), np.array(p_up), np.array(ok)


@pytest.fixture(scope="module")
def stream(events):
    return market_events(events)


@pytest.fixture(scope="module")
def live(ensemble, stream):
    runtime = ModelRuntime(ROLES, compiled_ensemble(ensemble), STRIDE)
    return runtime, *run_live(runtime, stream)


def test_features_and_ok_are_the_backtests(events, ensemble, live):
    runtime, vectors, p_up, ok = live
    s = compute_signals(events, ROLES, ensemble, STRIDE)
    assert runtime.names[: len(ROLES)] == ROLES  # the engine's roles keep their places across models
    columns = [runtime.names.index(n) for n in s.names]
    assert np.array_equal(vectors[:, columns], s.features, equal_nan=True)  # NaN before warm, as batched
    assert np.array_equal(ok, s.ok)
    first = int(np.argmax(ok))
    assert 1000 < first < len(ok) - 3000  # a few thousand quotes after warm-up
    assert np.isnan(p_up[:first]).all() and np.isfinite(p_up[first:]).all()


def test_p_up_equals_the_backtests(events, ensemble, live):
    """Within 1e-6 of the library's probabilities but where isotonic calibration magnifies the compiled
    LSTM's float32 rounding (within ~2 ulps of torch) by a steep step (pipeline.models.compiled)."""
    _, _, p_up, ok = live
    s = compute_signals(events, ROLES, ensemble, STRIDE)
    diff = np.abs(p_up - s.p_up)[ok]
    assert (diff <= 1e-6).mean() >= 0.999 and diff.max() <= 1e-4, (np.sort(diff)[-5:], len(diff))
    # and against the reference: a live model holding the last `window` rows of the row's phase
    first = int(np.argmax(ok))
    X = s.features[first:, [s.names.index(n) for n in MODEL_FEATURES]]
    window = ensemble.members["lstm"].params["window"]
    for row in [0, 1, STRIDE - 1, STRIDE, STRIDE * window + 3, *range(len(X) - 2 * STRIDE, len(X))]:
        assert abs(p_up[first + row] - tick_by_tick_p_up(ensemble, X, STRIDE, row, window)) <= 1e-4, row


def test_each_phase_of_the_sampling_grid_is_one_lstm_sequence(ensemble, live):
    """Bit for bit the compiled ensemble's batch over each phase: the rings hold the right rows."""
    runtime, vectors, p_up, ok = live
    first = int(np.argmax(ok))
    X = vectors[first:, [runtime.names.index(n) for n in MODEL_FEATURES]]
    compiled = CompiledEnsemble(export_ensemble(ensemble))
    by_phase = np.empty(len(X))
    for phase in range(STRIDE):
        by_phase[phase::STRIDE] = compiled.proba_batch(X[phase::STRIDE])
    assert np.array_equal(by_phase, p_up[first:])
    assert not np.array_equal(compiled.proba_batch(X), p_up[first:])  # one sequence of all quotes differs


def test_within_1e_6_everywhere_with_platt_calibration(events, stream):
    _, values, warm = feature_rows(events, MODEL_FEATURES)
    X = values[warm][::3]
    y = (np.nan_to_num(np.diff(X[:, 0], append=0.0)) > 0).astype(np.int64)
    split = int(len(X) * 0.7)
    members = {kind: make_model(kind, TINY.get(kind), seed=2, calibration="platt").fit(X[:split], y[:split],
                                                                                          X[split:], y[split:])
               for kind in ("logistic", "forest", "lstm", "xgb")}  # fmt: skip
    ensemble = Ensemble(members, feature_names=MODEL_FEATURES)
    _, p_up, ok = run_live(ModelRuntime(ROLES, compiled_ensemble(ensemble), STRIDE), stream)
    s = compute_signals(events, ROLES, ensemble, STRIDE)
    assert np.array_equal(ok, s.ok)
    assert np.abs(p_up - s.p_up)[ok].max() <= 1e-6


def test_without_a_model_the_features_alone(events, stream):
    vectors, p_up, ok = run_live(ModelRuntime(ROLES, None, STRIDE), stream)
    s = compute_signals(events, ROLES, None, STRIDE)
    assert np.array_equal(ok, s.ok) and np.isnan(p_up).all()
    assert np.array_equal(vectors, s.features, equal_nan=True)


def test_warm_up_then_live_is_the_same_stream(ensemble, stream, live):
    _, _, p_up, ok = live
    runtime = ModelRuntime(ROLES, compiled_ensemble(ensemble), STRIDE)
    cut = len(stream) - 500
    assert runtime.warm_up(stream[:cut]) == cut and runtime.last_ok
    quotes_before = sum(type(e) is Quote for e in stream[:cut])
    _, rest_p, rest_ok = run_live(runtime, stream[cut:])
    assert np.array_equal(rest_p, p_up[quotes_before:]) and np.array_equal(rest_ok, ok[quotes_before:])
    fresh = runtime.restarted()
    assert not fresh.warm and fresh.quotes == 0 and fresh.compiled is runtime.compiled
    with pytest.raises(TypeError):
        runtime.update(("not", "an", "event"))


def test_depth_updates_reach_the_features_bare_or_wrapped():
    from typing import NamedTuple

    from pipeline.features.l2book import DepthUpdate

    class DepthEvent(NamedTuple):  # the feeds' wrapper
        symbol: str
        ts_ns: int
        update: DepthUpdate

    names = (*ROLES, "depthimb_l5")
    snapshot = DepthUpdate(1_000, 10, True, np.array([1, 1, -1, -1], dtype=np.int8),
                           np.array([99.9, 99.8, 100.1, 100.2]), np.array([1.0, 2.0, 1.5, 0.5]))  # fmt: skip
    bare, wrapped = ModelRuntime(names, None, STRIDE), ModelRuntime(names, None, STRIDE)
    bare.update(snapshot)
    wrapped.update(DepthEvent("BTC/USDT:USDT", 1_000, snapshot))
    assert bare.features.book.valid and wrapped.features.book.valid
    assert np.isfinite(bare.features.values[-1]) and bare.features.values[-1] == wrapped.features.values[-1]
