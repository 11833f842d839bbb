"""Compiled inference: each exported model gives what its library predicts, alone and in the ensemble.

The library's probability here is ``model.calibrator(model._raw_proba(X))``: ``predict_proba``
without the wrapper's finite-rows check, so NaN rows show each library's own semantics (the
wrapper itself rejects them). Trees are compared bit for bit before calibration; the logistic
regression within 1e-6 after it; the LSTM (torch runs oneDNN, not our loop) within a few float32
ulps before calibration and, after it, within what the calibration's steepest slope makes of that.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb
from numba import njit

from pipeline.models.base import Calibrator, make_model
from pipeline.models.compiled import (
    CompiledEnsemble,
    export_ensemble,
    export_model,
    load_compiled,
    member_proba_batch,
    save_compiled,
)
from pipeline.models.compiled import evaluators as ev
from pipeline.models.compiled.export import (
    ARRAYS_FILE,
    HEADER_FILE,
    _float32_at_most,
    calibration_array,
    check_member_arrays,
)
from pipeline.models.ensemble import fit_ensemble
from pipeline.models.xgb import XGBModel

TOL = 1e-6
LSTM_RAW_TOL = 2.5e-7  # ~4 float32 ulps at 0.5; torch with and without oneDNN differ by as much
EXTREMES = np.array([1e12, -1e12, 1e-300, -1e-300, 5e-324, -0.0])
SEED = 5

# (kind, params, calibration, with a validation fold): sizes, depths and layers beyond the defaults.
VARIANTS = [
    ("logistic", {}, "isotonic", True),
    ("logistic", {"C": 0.01}, "platt", True),
    ("logistic", {}, "isotonic", False),
    ("forest", {"n_estimators": 40, "max_depth": 6}, "isotonic", True),
    ("forest", {"n_estimators": 1, "max_depth": 2}, "platt", True),
    ("forest", {"n_estimators": 12, "max_depth": None, "min_samples_leaf": 1, "max_features": 1.0}, "isotonic", True),
    ("xgb", {"n_estimators": 150, "early_stopping_rounds": 15, "max_depth": 3, "learning_rate": 0.1}, "isotonic", True),
    ("xgb", {"n_estimators": 40, "max_depth": 1}, "platt", True),
    ("xgb", {"n_estimators": 25, "max_depth": 8, "subsample": 1.0}, "none", False),
    ("lstm", {"window": 4, "hidden": 8, "max_epochs": 3, "batch_size": 128}, "isotonic", True),
    ("lstm", {"window": 1, "hidden": 4, "max_epochs": 2}, "platt", True),
    ("lstm", {"window": 8, "hidden": 16, "layers": 2, "max_epochs": 2}, "isotonic", True),
    ("lstm", {"window": 3, "hidden": 8, "layers": 3, "max_epochs": 1}, "none", False),
    ("lstm", {"state": "window", "window": 4, "hidden": 8, "max_epochs": 3, "batch_size": 128}, "isotonic", True),
    ("lstm", {"state": "window", "window": 8, "hidden": 16, "layers": 2, "max_epochs": 2}, "isotonic", True),
]


def variant_id(variant) -> str:
    kind, params, calibration, validation = variant
    return f"{kind}-{'-'.join(f'{k}{v}' for k, v in params.items())}-{calibration}{'' if validation else '-noval'}"


def library_proba(model, X: np.ndarray) -> np.ndarray:
    return model.calibrator(np.asarray(model._raw_proba(X), dtype=np.float64))


def all_rows(signal_data) -> np.ndarray:
    (X, _), (Xv, _), (Xt, _) = signal_data
    return np.vstack([X, Xv, Xt])


def hard_rows(X: np.ndarray, seed: int, nan_share: float = 0.1) -> np.ndarray:
    """X with NaN cells and extreme cells (+-1e12, tiny, -0.0) sprinkled in."""
    rng = np.random.default_rng(seed)
    hard = X.copy()
    extreme = rng.random(X.shape) < 0.1
    hard[extreme] = rng.choice(EXTREMES, size=int(extreme.sum()))
    hard[rng.random(X.shape) < nan_share] = np.nan
    return hard


def threshold_rows(X: np.ndarray, model, arrays: dict[str, np.ndarray], seed: int, n: int = 1000) -> np.ndarray:
    """Rows with one feature at a split's threshold, or a float32/float64 ulp either side of it
    (the library's own thresholds: float64 for the forest, float32 for XGBoost)."""
    rng = np.random.default_rng(seed)
    nodes = arrays["nodes"]
    splits = np.flatnonzero(nodes[:, ev.LEFT] >= 0)
    pick = rng.choice(splits, n)
    if model.kind == "forest":
        trees = [e.tree_ for e in model.estimator.estimators_]
        features = np.concatenate([t.feature[t.children_left >= 0] for t in trees])
        thresholds = np.concatenate([t.threshold[t.children_left >= 0] for t in trees])
        which = rng.integers(len(thresholds), size=n)
        feature, t64 = features[which], thresholds[which]
    else:
        feature, t64 = nodes[pick, ev.SPLIT] >> 1, arrays["values"][pick].astype(np.float64)
    ulp32 = np.spacing(np.abs(t64).astype(np.float32)).astype(np.float64)
    shifts = np.column_stack([np.zeros(n), -0.25 * ulp32, 0.25 * ulp32, -ulp32, ulp32,
                              np.nextafter(t64, -np.inf) - t64, np.nextafter(t64, np.inf) - t64])
    rows = X[rng.integers(len(X), size=n)].copy()
    rows[np.arange(n), feature] = t64 + shifts[np.arange(n), rng.integers(shifts.shape[1], size=n)]
    return rows


def calibration_slope(calibrator: Calibrator) -> float:
    """The steepest slope of the calibration map: how much it can magnify a raw difference."""
    if calibrator.method == "isotonic":
        return float(np.max(np.diff(calibrator.knots_y) / np.diff(calibrator.knots_x)))
    if calibrator.method == "platt":
        p = np.linspace(1e-7, 1 - 1e-7, 200_001)
        return float(np.max(np.abs(np.diff(calibrator(p)) / np.diff(p))))
    return 1.0


def assert_faithful(model, arrays: dict[str, np.ndarray], X: np.ndarray) -> None:
    """Compiled vs library on X: NaN where the library gives NaN, the values within the kind's bound."""
    compiled = member_proba_batch(model.kind, arrays, X)
    library = library_proba(model, X)
    np.testing.assert_array_equal(np.isnan(compiled), np.isnan(library))
    finite = ~np.isnan(library)
    error = np.abs(compiled - library)[finite]
    if model.kind in ("forest", "xgb"):
        raw = member_proba_batch(model.kind, {**arrays, "calibration": calibration_array(Calibrator())}, X)
        np.testing.assert_array_equal(raw, np.asarray(model._raw_proba(X), dtype=np.float64))
    if model.kind == "lstm":
        raw = member_proba_batch("lstm", {**arrays, "calibration": calibration_array(Calibrator())}, X)
        raw_error = np.abs(raw - model._raw_proba(X))[finite]
        assert raw_error.max() <= LSTM_RAW_TOL
        assert np.all(error <= TOL + calibration_slope(model.calibrator) * raw_error)
    else:
        assert error.max() <= TOL


@pytest.fixture(scope="module", params=VARIANTS, ids=variant_id)
def fitted(request, signal_data):
    kind, params, calibration, validation = request.param
    (X, y), (Xv, yv), _ = signal_data
    model = make_model(kind, params, seed=SEED, calibration=calibration)
    return model.fit(X, y, Xv, yv) if validation else model.fit(X, y)


def test_compiled_member_gives_the_library_probabilities(fitted, signal_data):
    X = all_rows(signal_data)
    arrays = export_model(fitted)
    assert fitted.calibrator.method == (fitted.calibration if fitted.fit_info["validation_rows"] else "none")
    assert_faithful(fitted, arrays, X)
    assert_faithful(fitted, arrays, hard_rows(X, seed=1, nan_share=0.0))
    if fitted.kind in ("forest", "xgb"):
        assert_faithful(fitted, arrays, threshold_rows(X, fitted, arrays, seed=2))


def test_nan_semantics_per_kind(fitted, signal_data):
    """The wrapper rejects NaN; the compiled path does what the library does: trees send NaN down the
    missing branch, the logistic regression's probability is NaN, the LSTM's is NaN while the NaN
    row is in its window, or (state carried) at that row only: the state passes it unchanged."""
    X = all_rows(signal_data)[:400].copy()
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict_proba(hard_rows(X, seed=3))
    arrays = export_model(fitted)
    assert_faithful(fitted, arrays, hard_rows(all_rows(signal_data), seed=3, nan_share=0.1))
    assert_faithful(fitted, arrays, hard_rows(all_rows(signal_data), seed=3, nan_share=0.005))  # clean LSTM windows
    X[100, 0] = np.nan
    p = member_proba_batch(fitted.kind, arrays, X)
    if fitted.kind in ("forest", "xgb"):
        assert np.isfinite(p).all()
    elif fitted.kind == "logistic":
        assert np.flatnonzero(np.isnan(p)).tolist() == [100]
    else:
        window = fitted.params["window"] if fitted.params["state"] == "window" else 1
        assert np.flatnonzero(np.isnan(p)).tolist() == list(range(100, 100 + window))
        if window == 1:  # as if the row were not there
            np.testing.assert_array_equal(np.delete(p, 100), member_proba_batch("lstm", arrays, np.delete(X, 100, 0)))


def test_the_per_tick_walk_gives_the_batch_values_bit_for_bit(fitted, signal_data):
    """Per tick the trees walk eight at a time over the walk table (leaves loop to themselves) and
    the LSTM steps its ring; each value is the batch evaluator's, NaN rows, extremes, a split's
    exact threshold and tree counts that are not a multiple of eight included."""
    X = all_rows(signal_data)
    arrays = export_model(fitted)
    rows = [hard_rows(X, seed=6), hard_rows(X, seed=7, nan_share=0.0)]
    if fitted.kind in ("forest", "xgb"):
        rows.append(threshold_rows(X, fitted, arrays, seed=8))
    header = {"members": [{"name": "m", "kind": fitted.kind, "weight": 1.0}], "n_features": X.shape[1],
              "feature_names": [f"f{i}" for i in range(X.shape[1])]}
    for R in rows:
        compiled = CompiledEnsemble({"header": header, "arrays": {"m": arrays}})
        ticks = np.array([compiled.proba_tick(r) for r in R])
        np.testing.assert_array_equal(ticks, member_proba_batch(fitted.kind, arrays, R))


def test_exported_arrays_have_the_documented_shapes(fitted):
    arrays = export_model(fitted)
    k = fitted.n_features
    if fitted.kind in ("forest", "xgb"):
        nodes, roots = arrays["nodes"], arrays["roots"]
        assert nodes.shape == (len(arrays["values" if fitted.kind == "xgb" else "thresholds"]), 2) and roots[0] == 0
        leaves = nodes[:, ev.LEFT] < 0
        features = nodes[~leaves, ev.SPLIT] >> 1
        assert np.all(nodes[leaves] == -1) and np.all((features >= 0) & (features < k))
        expected_trees = fitted.params["n_estimators"] if fitted.kind == "forest" else fitted.fit_info["rounds"]
        assert len(roots) == expected_trees
        if fitted.kind == "forest":  # P(class 1) at the leaves; one tree: the leaf count is splits + 1
            values = arrays["leaf_values"][leaves]
            assert np.all((values >= 0) & (values <= 1)) and leaves.sum() == (~leaves).sum() + len(roots)
    if fitted.kind == "lstm":
        p = fitted.params
        gates = 4 * p["hidden"]
        assert arrays["w_ih0"].shape == (k, gates) and arrays["w_hh"].shape == (p["layers"], p["hidden"], gates)
        assert arrays["w_ih_upper"].shape == (p["layers"] - 1, p["hidden"], gates)
        assert arrays["window"].tolist() == [p["window"]]


def test_a_float32_threshold_splits_float32_rows_as_the_float64_one():
    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** rng.integers(-30, 30, size=20_000)
    t64 = np.concatenate([rng.normal(size=20_000) * magnitudes, [1e300, -1e300, np.inf]])
    t32 = _float32_at_most(t64)
    assert t32.dtype == np.float32 and np.all(t32.astype(np.float64) <= t64)
    with np.errstate(over="ignore"):
        near = np.nextafter(t32, np.float32(np.inf))  # the float32 just above: must be above t64 too
    assert np.all((near.astype(np.float64) > t64) | (t32 == np.float32(np.inf)))


def test_calibration_is_the_calibrators_bit_for_bit():
    rng = np.random.default_rng(0)
    p_raw, y = rng.random(3000), (rng.random(3000) < 0.3).astype(int)
    p = np.concatenate([rng.random(5000), [0.0, 1.0, np.nan, 1e-300, 1 - 1e-16]])
    for method in ("isotonic", "platt", "none"):
        calibrator = Calibrator.fit(method, p_raw, y)
        knots = np.asarray(calibrator.knots_x)
        q = np.concatenate([p, knots])  # exactly on the knots too
        compiled = np.array([ev.calibrate(calibration_array(calibrator), v) for v in q])
        expected = calibrator(q)
        if method == "platt":  # libm's log/tanh against numpy's SIMD ones: a few ulps of 1e-16
            np.testing.assert_allclose(compiled, expected, rtol=0, atol=1e-15)
        else:
            np.testing.assert_array_equal(compiled, expected)
    xp, fp = np.array([0.3]), np.array([0.7])  # numpy's one-knot special case
    assert [ev._interp(v, xp, fp) for v in (0.1, 0.3, 0.9)] == np.interp([0.1, 0.3, 0.9], xp, fp).tolist()


def test_lstm_activations_are_within_3_ulps_and_keep_nan():
    @njit
    def apply(which, x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = ev.exp32(x[i]) if which == 0 else ev.sigmoid32(x[i]) if which == 1 else ev.tanh32(x[i])
        return out

    x = np.concatenate([np.linspace(-87, 88, 400_001), np.linspace(-1, 1, 200_001)]).astype(np.float32)
    exact = [np.exp, lambda v: 1 / (1 + np.exp(-v)), np.tanh]
    for which, reference in enumerate(exact):
        r = reference(x.astype(np.float64))
        ok = np.abs(r) > 1e-37  # normal float32 results
        ulps = np.abs(apply(which, x)[ok] - r[ok]) / np.spacing(np.abs(r[ok]).astype(np.float32))
        assert ulps.max() <= 3.0, (which, ulps.max())
        special = apply(which, np.array([np.nan, np.inf, -np.inf], np.float32))
        assert np.isnan(special[0])
    assert apply(2, np.array([np.inf, -np.inf, 0.0], np.float32)).tolist() == [1.0, -1.0, 0.0]
    assert apply(1, np.array([np.inf, 0.0], np.float32)).tolist() == [1.0, 0.5]


def test_xgb_export_honours_base_score_and_the_best_iteration(signal_data):
    (X, y), (Xv, yv), _ = signal_data
    model = XGBModel(params={"n_estimators": 60, "max_depth": 3}, calibration="none")
    booster = xgb.train({"objective": "binary:logistic", "base_score": 0.3, "max_depth": 3, "nthread": 1, "seed": 1},
                        xgb.DMatrix(X, label=y), num_boost_round=60)
    model.booster, model.n_features, model.fit_info = booster, X.shape[1], {"rounds": 37}  # predict uses 37 of 60
    arrays = export_model(model)
    assert len(arrays["roots"]) == 37
    assert arrays["base_margin"][0] == pytest.approx(np.log(0.3 / 0.7), abs=1e-6)  # logit(0.3), not 0
    margins = np.array([ev.xgb_margin(arrays["nodes"], arrays["values"], arrays["roots"], arrays["base_margin"], row)
                        for row in Xv])
    np.testing.assert_array_equal(margins, booster.inplace_predict(Xv, iteration_range=(0, 37), predict_type="margin"))
    np.testing.assert_array_equal(member_proba_batch("xgb", arrays, Xv), model.predict_proba(Xv))


# -- the ensemble ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ensemble(signal_data, quick):
    (X, y), (Xv, yv), _ = signal_data
    return fit_ensemble(X, y, Xv, yv, params=quick, seed=SEED, feature_names=tuple(f"f{i}" for i in range(X.shape[1])))


def test_one_call_per_tick_gives_the_ensembles_probability(ensemble, signal_data):
    X = np.vstack([all_rows(signal_data), hard_rows(all_rows(signal_data), seed=4, nan_share=0.0)])
    compiled = CompiledEnsemble(export_ensemble(ensemble))
    batch = compiled.proba_batch(X)
    ticks = np.array([compiled.proba_tick(row) for row in X])
    np.testing.assert_array_equal(ticks, batch)  # the backtest's batch is the live path, row by row
    assert compiled.rows_seen == len(X)
    # each member within its own bound (the LSTM's is the widest), the sum is the weighted one
    members = compiled.member_proba_batch(X)
    library = ensemble.member_probas(X)
    weights = np.array([ensemble.weights[name] for name in ensemble.members])
    for i, model in enumerate(ensemble.members.values()):
        assert_faithful(model, compiled.arrays[list(ensemble.members)[i]], X)
    np.testing.assert_allclose(batch, members @ weights, rtol=0, atol=1e-15)
    assert np.all(np.abs(batch - ensemble.predict_proba(X)) <= np.abs(members - library) @ weights + 1e-15)
    compiled.reset()
    assert compiled.proba_tick(X[0]) == batch[0] and compiled.rows_seen == 1


def test_a_nan_feature_makes_the_tick_nan_while_the_lstm_sees_it(ensemble, signal_data):
    X = all_rows(signal_data)[:50].copy()
    X[10, 3] = np.nan
    p = CompiledEnsemble(export_ensemble(ensemble)).proba_batch(X)
    lstm = ensemble.members["lstm"].params
    window = lstm["window"] if lstm["state"] == "window" else 1
    assert np.flatnonzero(np.isnan(p)).tolist() == list(range(10, 10 + window))


def test_an_ensemble_without_an_lstm(signal_data, quick):
    (X, y), (Xv, yv), (Xt, _) = signal_data
    two = fit_ensemble(X, y, Xv, yv, params=quick, weights={"xgb": 0.6, "logistic": 0.4}, seed=SEED)
    compiled = CompiledEnsemble(export_ensemble(two))
    assert compiled.header["lstm_window"] is None
    np.testing.assert_allclose(compiled.proba_batch(Xt), two.predict_proba(Xt), rtol=0, atol=TOL)
    assert compiled.proba_tick(Xt[0]) == compiled.proba_batch(Xt[:1])[0]


def test_save_and_load_round_trip_without_pickle(ensemble, signal_data, tmp_path):
    X = all_rows(signal_data)
    exported = export_ensemble(ensemble)
    save_compiled(ensemble, tmp_path / "compiled")
    assert sorted(p.name for p in (tmp_path / "compiled").iterdir()) == sorted([ARRAYS_FILE, HEADER_FILE])
    loaded = load_compiled(tmp_path / "compiled")
    assert loaded["header"] == json.loads(json.dumps(exported["header"]))
    header = loaded["header"]
    assert [m["kind"] for m in header["members"]] == [m.kind for m in ensemble.members.values()]
    assert {m["name"]: m["weight"] for m in header["members"]} == ensemble.weights
    assert header["feature_names"] == list(ensemble.feature_names)
    assert header["lstm_window"] == ensemble.members["lstm"].params["window"]
    for name, arrays in exported["arrays"].items():
        assert loaded["arrays"][name].keys() == arrays.keys()
        for key, array in arrays.items():
            assert loaded["arrays"][name][key].dtype == array.dtype
            np.testing.assert_array_equal(loaded["arrays"][name][key], array)
    np.testing.assert_array_equal(CompiledEnsemble(loaded).proba_batch(X), CompiledEnsemble(exported).proba_batch(X))
    with np.load(tmp_path / "compiled" / ARRAYS_FILE, allow_pickle=False) as npz:
        assert all(npz[key].dtype != object for key in npz.files)
    header["format_version"] = 0
    (tmp_path / "compiled" / HEADER_FILE).write_text(json.dumps(header))
    with pytest.raises(ValueError, match="compiled format 0"):
        load_compiled(tmp_path / "compiled")


def test_export_refuses_an_unfitted_model_and_load_a_malformed_tree(ensemble):
    with pytest.raises(ValueError, match="before fit"):
        export_model(make_model("forest"))
    arrays = export_model(ensemble.members["forest"])
    nodes = arrays["nodes"].copy()
    nodes[np.flatnonzero(nodes[:, ev.LEFT] >= 0)[-1], ev.LEFT] = len(nodes) - 1  # its right child: past the end
    with pytest.raises(ValueError, match="malformed node table"):
        check_member_arrays("forest", {**arrays, "nodes": nodes})
