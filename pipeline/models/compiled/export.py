"""Trained models -> flat numpy arrays, and an ensemble's arrays <-> one ``.npz`` plus a JSON header.

``export_model`` reads what each library predicts with (nothing is re-fitted or approximated):

- logistic: the scaler's ``mean``/``scale``, ``coef``, ``intercept`` (float64).
- forest: every tree's nodes in one table ``nodes`` int32 ``[N, 2]``: the left child's row (the
  right child is the next row: the trees are renumbered breadth first, siblings side by side) and
  ``feature << 1 | 1 if a NaN goes right`` (``tree_.missing_go_to_left``); ``-1, -1`` at a leaf.
  ``thresholds`` float32 ``[N]``: the largest float32 not above the split's float64 threshold
  (the same test for a float32 row, in half the memory); ``leaf_values`` float64 ``[N]``: P(class 1)
  at the leaves (scikit-learn 1.9 stores class fractions in ``tree_.value`` and a tree's
  ``predict_proba`` returns them as they are); ``roots`` int32 ``[trees]``.
- xgb: the same ``nodes`` table for the trees that ``predict`` uses (the first ``fit_info["rounds"]``
  rounds: the best iteration when early-stopped; XGBoost's own numbering, whose siblings are side
  by side already; the NaN direction from ``default_left``), ``values`` float32 (split conditions,
  leaf values) and ``base_margin`` float32 ``[1]``: the saved ``base_score`` as XGBoost's
  logistic ``ProbToMargin`` turns it into a margin.
- lstm: the standardisation (``mean``, ``std`` float64), the weights float32 and transposed to
  ``[inputs, 4 * hidden]`` (``w_ih0``; ``w_ih_upper`` ``[layers - 1, hidden, 4 * hidden]``;
  ``w_hh`` ``[layers, hidden, 4 * hidden]``), biases ``b_ih``/``b_hh`` ``[layers, 4 * hidden]``,
  the head ``head_w`` ``[hidden]``, ``head_b`` ``[1]``, ``window`` int32 ``[1]`` and ``carried``
  int32 ``[1]`` (1: the state is carried row to row, ``LSTMModel`` ``state="carried"``; absent in
  exports written before it, read as 0: each row's window from a zero state).
- every kind: ``calibration`` float64 ``[method, a, b, n, knots_x[n], knots_y[n]]``
  (pipeline.models.compiled.evaluators).

A saved compiled ensemble is a directory with ``compiled.json`` (format version, members with kind
and weight, feature names, LSTM window, library versions) and ``compiled.npz`` (the arrays, keyed
``<member>/<array>``), written atomically; loading never unpickles (``allow_pickle=False``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models.base import PROBA_FLOOR, Calibrator, Model, atomic_dir
from pipeline.models.compiled.evaluators import CAL_ISOTONIC, CAL_NONE, CAL_PLATT, LEFT, SPLIT, xgb_prob_to_margin

FORMAT_VERSION = 1
HEADER_FILE = "compiled.json"
ARRAYS_FILE = "compiled.npz"
# Each kind's arrays, in the order its evaluator takes them, with their dtypes.
MEMBER_ARRAYS: dict[str, dict[str, type]] = {
    "logistic": {"mean": np.float64, "scale": np.float64, "coef": np.float64, "intercept": np.float64,
                 "calibration": np.float64},
    "forest": {"nodes": np.int32, "thresholds": np.float32, "leaf_values": np.float64, "roots": np.int32,
               "calibration": np.float64},
    "xgb": {"nodes": np.int32, "values": np.float32, "roots": np.int32, "base_margin": np.float32,
            "calibration": np.float64},
    "lstm": {"mean": np.float64, "std": np.float64, "w_ih0": np.float32, "w_ih_upper": np.float32,
             "w_hh": np.float32, "b_ih": np.float32, "b_hh": np.float32, "head_w": np.float32,
             "head_b": np.float32, "calibration": np.float64, "window": np.int32, "carried": np.int32},
}
# Arrays added after format 1 was first written, with the value that reproduces what older exports meant.
OPTIONAL_ARRAYS: dict[str, dict[str, np.ndarray]] = {"lstm": {"carried": np.array([0], dtype=np.int32)}}
_CAL_CODES = {"none": CAL_NONE, "isotonic": CAL_ISOTONIC, "platt": CAL_PLATT}


def calibration_array(calibrator: Calibrator) -> np.ndarray:
    knots_x, knots_y = np.asarray(calibrator.knots_x, np.float64), np.asarray(calibrator.knots_y, np.float64)
    head = [_CAL_CODES[calibrator.method], calibrator.a, calibrator.b, len(knots_x)]
    return np.concatenate([np.array(head, dtype=np.float64), knots_x, knots_y])


def export_model(model: Model) -> dict[str, np.ndarray]:
    """The arrays of one fitted model (see the module docstring), checked against ``MEMBER_ARRAYS``."""
    if model.n_features is None:
        raise ValueError(f"{model.kind}: export before fit")
    exporters = {"logistic": _logistic, "forest": _forest, "xgb": _xgb, "lstm": _lstm}
    arrays = {**exporters[model.kind](model), "calibration": calibration_array(model.calibrator)}
    return check_member_arrays(model.kind, arrays)


def _logistic(model) -> dict[str, np.ndarray]:
    return {"mean": model.mean, "scale": model.scale, "coef": model.coef,
            "intercept": np.array([model.intercept])}


def _forest(model) -> dict[str, np.ndarray]:
    forest = model.estimator
    positive = list(forest.classes_).index(1)
    nodes, thresholds, leaf_values, roots, offset = [], [], [], [], 0
    for estimator in forest.estimators_:
        tree = estimator.tree_
        if tree.n_outputs != 1:
            raise ValueError(f"forest: a tree with {tree.n_outputs} outputs (one expected)")
        order = np.array(_siblings_adjacent(tree.children_left, tree.children_right))
        new_id = np.empty(len(order), dtype=np.int64)
        new_id[order] = np.arange(len(order)) + offset
        left = tree.children_left[order]
        split = left >= 0
        missing_right = ~tree.missing_go_to_left[order].astype(bool)
        nodes.append(_node_table(split, new_id[left], tree.feature[order], missing_right))
        thresholds.append(np.where(split, _float32_at_most(tree.threshold[order]), np.float32(0)))
        leaf_values.append(np.where(split, 0.0, tree.value[order, 0, positive]))
        roots.append(offset)
        offset += len(order)
    return {"nodes": np.concatenate(nodes), "thresholds": np.concatenate(thresholds),
            "leaf_values": np.concatenate(leaf_values), "roots": np.array(roots)}


def _node_table(split: np.ndarray, left: np.ndarray, feature: np.ndarray, missing_right: np.ndarray) -> np.ndarray:
    """The evaluators' ``[nodes, 2]`` table: left child, ``feature << 1 | NaN goes right``; -1 at leaves."""
    table = np.full((len(split), 2), -1, dtype=np.int64)
    table[split, LEFT] = left[split]
    table[split, SPLIT] = feature[split].astype(np.int64) * 2 + missing_right[split]
    return table


def _float32_at_most(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 threshold: for a float32 x, ``x <= t`` exactly when
    ``x <= _float32_at_most(t)`` (scikit-learn compares float32 rows with float64 thresholds)."""
    with np.errstate(over="ignore"):
        t32 = threshold.astype(np.float32)
    above = t32.astype(np.float64) > threshold
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _siblings_adjacent(left: np.ndarray, right: np.ndarray) -> list[int]:
    """A tree's node ids, breadth first, each split's two children side by side (scikit-learn numbers
    depth first, so its right children are far from the left ones): what lets the evaluator step to
    ``left + (x > threshold)`` without a branch."""
    order = [0]
    for node in order:  # the list grows as it is walked
        if left[node] >= 0:
            order += [int(left[node]), int(right[node])]
    return order


def _xgb(model) -> dict[str, np.ndarray]:
    learner = json.loads(bytes(model.booster.save_raw("json")))["learner"]
    if learner["objective"]["name"] != "binary:logistic":
        raise ValueError(f"xgb: objective {learner['objective']['name']!r}, only binary:logistic is exported")
    booster = learner["gradient_booster"]
    if booster["name"] != "gbtree":
        raise ValueError(f"xgb: booster {booster['name']!r}, only gbtree is exported")
    base_score = json.loads(learner["learner_model_param"]["base_score"])  # "[5E-1]" (a vector since 3.1)
    base_score = np.float32(base_score[0] if isinstance(base_score, list) else base_score)
    # predict uses iteration_range=(0, rounds): rounds -> trees through iteration_indptr
    trees = booster["model"]["trees"][: booster["model"]["iteration_indptr"][model.fit_info["rounds"]]]
    nodes, values, roots, offset = [], [], [], 0
    for tree in trees:
        if any(tree["split_type"]):
            raise ValueError("xgb: categorical splits are not exported")
        left, right = np.array(tree["left_children"]), np.array(tree["right_children"])
        split = left >= 0
        if np.any(right[split] != left[split] + 1):  # XGBoost's GetNextNode steps to left + 1 as well
            raise ValueError("xgb: a split whose children are not side by side")
        missing_right = ~np.array(tree["default_left"], dtype=bool)
        nodes.append(_node_table(split, left + offset, np.array(tree["split_indices"]), missing_right))
        values.append(np.array(tree["split_conditions"], dtype=np.float32))  # the leaf value at a leaf
        roots.append(offset)
        offset += len(left)
    return {"nodes": np.concatenate(nodes), "values": np.concatenate(values), "roots": np.array(roots),
            "base_margin": np.array([xgb_prob_to_margin(base_score)], dtype=np.float32)}


def _lstm(model) -> dict[str, np.ndarray]:
    p = model.params
    state = {k: v.detach().numpy() for k, v in model.net.state_dict().items()}
    layers, hidden = p["layers"], p["hidden"]

    def per_layer(name: str, first: int = 0) -> list[np.ndarray]:
        return [state[f"lstm.{name}_l{layer}"] for layer in range(first, layers)]

    # torch keeps [4 * hidden, inputs]; transposed, the evaluator's inner loop runs over the gates
    upper = [w.T for w in per_layer("weight_ih", first=1)]
    return {
        "mean": model.mean, "std": model.std,
        "w_ih0": state["lstm.weight_ih_l0"].T,
        "w_ih_upper": np.stack(upper) if upper else np.zeros((0, hidden, 4 * hidden)),
        "w_hh": np.stack([w.T for w in per_layer("weight_hh")]),
        "b_ih": np.stack(per_layer("bias_ih")), "b_hh": np.stack(per_layer("bias_hh")),
        "head_w": state["head.weight"][0], "head_b": state["head.bias"],
        "window": np.array([p["window"]]),
        "carried": np.array([int(p.get("state", "window") == "carried")]),
    }


def check_member_arrays(kind: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays a kind needs, C-contiguous in their dtypes; raises on a missing or extra one."""
    spec = MEMBER_ARRAYS[kind]
    arrays = {**OPTIONAL_ARRAYS.get(kind, {}), **arrays}
    if set(arrays) != set(spec):
        raise ValueError(f"{kind}: arrays {sorted(arrays)}, expected {sorted(spec)}")
    arrays = {name: np.ascontiguousarray(arrays[name], dtype=dtype) for name, dtype in spec.items()}
    if "nodes" in arrays:  # the tree walk trusts these: check them once here
        nodes = arrays["nodes"]
        split = nodes[:, LEFT] >= 0
        if (nodes.ndim != 2 or nodes.shape[1] != 2 or np.any(nodes[split, LEFT] + 1 >= len(nodes))
                or np.any(nodes[split, SPLIT] < 0) or np.any(nodes[~split] != -1)):
            raise ValueError(f"{kind}: a malformed node table")
    return arrays


def export_ensemble(ensemble: Any) -> dict[str, Any]:
    """``{"header": {...}, "arrays": {member: {name: array}}}``: what ``save_compiled`` writes."""
    members = [{"name": name, "kind": model.kind, "weight": ensemble.weights[name]}
               for name, model in ensemble.members.items()]
    lstms = [m for m in ensemble.members.values() if m.kind == "lstm"]
    if len(lstms) > 1:
        raise ValueError("one LSTM member at most (the per-tick path keeps one ring of rows)")
    header = {
        "format_version": FORMAT_VERSION,
        "members": members,
        "feature_names": list(ensemble.feature_names),
        "n_features": next(iter(ensemble.members.values())).n_features,
        "lstm_window": lstms[0].params["window"] if lstms else None,
        "proba_floor": PROBA_FLOOR,
        "libraries": _library_versions(),
    }
    return {"header": header, "arrays": {name: export_model(model) for name, model in ensemble.members.items()}}


def save_compiled(ensemble: Any, directory: str | Path) -> Path:
    exported = export_ensemble(ensemble)
    flat = {f"{member}/{name}": array for member, arrays in exported["arrays"].items()
            for name, array in arrays.items()}
    with atomic_dir(directory) as tmp:
        np.savez(tmp / ARRAYS_FILE, **flat)
        (tmp / HEADER_FILE).write_text(json.dumps(exported["header"], indent=2, sort_keys=True))
    return Path(directory)


def load_compiled(directory: str | Path) -> dict[str, Any]:
    """What ``export_ensemble`` gave when it was saved (wrap it in ``CompiledEnsemble`` to evaluate)."""
    directory = Path(directory)
    header = json.loads((directory / HEADER_FILE).read_text())
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory}: compiled format {header.get('format_version')} is not {FORMAT_VERSION}")
    arrays: dict[str, dict[str, np.ndarray]] = {m["name"]: {} for m in header["members"]}
    with np.load(directory / ARRAYS_FILE, allow_pickle=False) as npz:
        for key in npz.files:
            member, name = key.split("/", 1)
            arrays[member][name] = npz[key]
    kinds = {m["name"]: m["kind"] for m in header["members"]}
    return {"header": header, "arrays": {name: check_member_arrays(kinds[name], a) for name, a in arrays.items()}}


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("numpy", "numba", "scikit-learn", "xgboost", "torch"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "absent"
    return versions
