"""The ensemble: a weighted average of the four models' calibrated probabilities.

Default weights LR 0.10, RF 0.30, LSTM 0.40, XGB 0.20 (``TrainingConfig.weights``); optionally
re-fitted on validation predictions by minimising the ensemble's log-loss over the simplex
(weights >= 0, summing to 1; SLSQP from scipy, which scikit-learn depends on). The log-loss of a
mixture is convex in its weights, so the fit finds the global minimum; what was fitted, on how
many rows and with what loss before and after is recorded with the weights.

Saved as one directory, easy to wrap in an ``mlflow.pyfunc.PythonModel`` (load it in
``load_context`` from the artefact path; ``predict_frame`` takes a DataFrame by feature name)::

    ensemble.json     weights (+ how they were set), member kinds, feature names in column order,
                      the label spec, the feature-definitions version, the format version
    members/<name>/   one saved model each (pipeline.models.base)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models.base import CalibrationMethod, Model, atomic_dir, make_model
from pipeline.training.metrics import log_loss

FORMAT_VERSION = 1
ENSEMBLE_FILE = "ensemble.json"
MEMBERS = ("logistic", "forest", "lstm", "xgb")
DEFAULT_WEIGHTS = {"logistic": 0.10, "forest": 0.30, "lstm": 0.40, "xgb": 0.20}


@dataclass
class Ensemble:
    members: dict[str, Model]
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    feature_names: tuple[str, ...] = ()
    label_spec: dict[str, Any] = field(default_factory=dict)
    features_version: str = ""
    weights_fit: dict[str, Any] | None = None  # how the weights were re-fitted; None = as configured

    def __post_init__(self) -> None:
        self.weights = check_weights(self.weights, self.members)
        widths = {name: m.n_features for name, m in self.members.items()}
        if len(set(widths.values())) > 1:
            raise ValueError(f"members were fitted on different feature counts: {widths}")
        if self.feature_names and widths and next(iter(widths.values())) != len(self.feature_names):
            raise ValueError(f"{len(self.feature_names)} feature names for members fitted on {widths}")

    def member_probas(self, X: np.ndarray) -> np.ndarray:
        """``[n, members]`` calibrated probabilities, columns in ``self.members`` order."""
        return np.column_stack([model.predict_proba(X) for model in self.members.values()])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(up) for each row (rows in time order: the LSTM reads each row's preceding window)."""
        return self.member_probas(X) @ np.array([self.weights[name] for name in self.members])

    def predict_frame(self, frame: Any) -> np.ndarray:
        """``predict_proba`` on a table with a column per feature name (a pandas DataFrame...)."""
        X = np.column_stack([np.asarray(frame[name], dtype=np.float64) for name in self.feature_names])
        return self.predict_proba(X)

    def refit_weights(self, X_val: np.ndarray, y_val: np.ndarray) -> Ensemble:
        """Re-fit the weights on a validation fold (minimum log-loss on the simplex) and record it."""
        probas = self.member_probas(X_val)
        names = list(self.members)
        before = np.array([self.weights[name] for name in names])
        fitted = simplex_weights(probas, y_val, start=before)
        self.weights = {name: float(w) for name, w in zip(names, fitted)}
        self.weights_fit = {
            "method": "min log-loss on the simplex (SLSQP)",
            "rows": int(len(y_val)),
            "previous_weights": {name: float(w) for name, w in zip(names, before)},
            "log_loss_before": log_loss(y_val, probas @ before),
            "log_loss_after": log_loss(y_val, probas @ fitted),
            "member_log_loss": {name: log_loss(y_val, probas[:, i]) for i, name in enumerate(names)},
        }
        return self

    def save(self, path: str | Path) -> Path:
        with atomic_dir(path) as tmp:
            for name, model in self.members.items():
                (tmp / "members" / name).mkdir(parents=True)
                model.save_into(tmp / "members" / name)
            meta = {
                "format_version": FORMAT_VERSION,
                # a list: the order of the members is the order of the weighted sum (bit-for-bit reloads)
                "members": [{"name": name, "kind": model.kind} for name, model in self.members.items()],
                "weights": self.weights,
                "weights_fit": self.weights_fit,
                "feature_names": list(self.feature_names),
                "label_spec": self.label_spec,
                "features_version": self.features_version,
            }
            (tmp / ENSEMBLE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Ensemble:
        path = Path(path)
        meta = json.loads((path / ENSEMBLE_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: ensemble format {meta.get('format_version')} is not {FORMAT_VERSION}")
        members = {m["name"]: Model.load(path / "members" / m["name"]) for m in meta["members"]}
        return cls(members=members, weights=meta["weights"], feature_names=tuple(meta["feature_names"]),
                   label_spec=meta["label_spec"], features_version=meta["features_version"],
                   weights_fit=meta["weights_fit"])


def fit_ensemble(
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    weights: Mapping[str, float] | None = None,
    refit_weights: bool = False,
    seed: int = 0,
    calibration: CalibrationMethod = "isotonic",
    feature_names: tuple[str, ...] = (),
    label_spec: Mapping[str, Any] | None = None,
    features_version: str = "",
) -> Ensemble:
    """Fit the members named in ``weights`` (default: all four) with their ``params`` (e.g. the tuned
    ones), early-stopped and calibrated on the validation fold, then optionally re-fit the weights."""
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    params = params or {}
    members = {name: make_model(name, params.get(name), seed=seed, calibration=calibration).fit(X, y, X_val, y_val)
               for name in weights}
    ensemble = Ensemble(members, weights, tuple(feature_names), dict(label_spec or {}), features_version)
    return ensemble.refit_weights(X_val, y_val) if refit_weights else ensemble


def check_weights(weights: Mapping[str, float], members: Mapping[str, Any]) -> dict[str, float]:
    if set(weights) != set(members):
        raise ValueError(f"weights for {sorted(weights)} but members {sorted(members)}")
    values = np.array(list(weights.values()), dtype=np.float64)
    if np.any(values < -1e-12) or abs(values.sum() - 1.0) > 1e-6:
        raise ValueError(f"weights must be >= 0 and sum to 1, got {dict(weights)}")
    return {name: float(w) for name, w in weights.items()}


def simplex_weights(probas: np.ndarray, y: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Weights on the simplex minimising the log-loss of ``probas @ w`` against ``y``."""
    from scipy.optimize import minimize

    probas = np.clip(np.asarray(probas, dtype=np.float64), 1e-15, 1 - 1e-15)
    y = np.asarray(y, dtype=np.float64)
    m = probas.shape[1]
    start = np.full(m, 1.0 / m) if start is None else np.asarray(start, dtype=np.float64)

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        p = np.clip(probas @ w, 1e-15, 1 - 1e-15)
        loss = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
        grad = -(((y / p) - (1 - y) / (1 - p))[:, None] * probas).mean(axis=0)
        return loss, grad

    result = minimize(loss_and_grad, start, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
                      options={"ftol": 1e-12, "maxiter": 200})
    w = np.clip(result.x, 0.0, None)
    return w / w.sum()
