"""Logistic regression on standardised features (scikit-learn), classes balanced by weight.

Saved as ``logistic.json`` (scaler mean/scale, coefficients, intercept): the whole model is
``sigmoid(((x - mean) / scale) . coef + intercept)``, which is also how it predicts here, so a
loaded model predicts exactly what the fitted one did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline.models.base import Model, _sigmoid

STATE_FILE = "logistic.json"


class LogisticModel(Model):
    kind: ClassVar[str] = "logistic"
    defaults: ClassVar[dict[str, Any]] = {"C": 1.0, "max_iter": 1000, "tol": 1e-6}

    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    coef: np.ndarray | None = None
    intercept: float = 0.0

    def _fit(self, X, y, X_val, y_val) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(X)
        # lbfgs is deterministic: the seed only matters to solvers that shuffle (saga, liblinear).
        fitted = LogisticRegression(
            C=self.params["C"], max_iter=self.params["max_iter"], tol=self.params["tol"],
            class_weight="balanced", random_state=self.seed,
        ).fit(scaler.transform(X), y)
        self.mean, self.scale = scaler.mean_.copy(), scaler.scale_.copy()
        self.coef, self.intercept = fitted.coef_[0].copy(), float(fitted.intercept_[0])
        self.fit_info["iterations"] = int(np.max(fitted.n_iter_))

    def _raw_proba(self, X: np.ndarray) -> np.ndarray:
        return _sigmoid(((X - self.mean) / self.scale) @ self.coef + self.intercept)

    def _save_state(self, directory: Path) -> None:
        state = {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                 "intercept": self.intercept}
        (directory / STATE_FILE).write_text(json.dumps(state))

    def _load_state(self, directory: Path) -> None:
        state = json.loads((directory / STATE_FILE).read_text())
        self.mean, self.scale = np.array(state["mean"]), np.array(state["scale"])
        self.coef, self.intercept = np.array(state["coef"]), float(state["intercept"])
