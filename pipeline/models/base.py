"""The one interface of the four models, their calibration and their on-disk directory.

A model is trained on rows in time order: ``X`` float64 ``[n, k]`` (finite), ``y`` in {0, 1}
(1 = the long take-profit was hit first: ``label == +1``). ``fit`` may be given a validation fold,
which then serves for early stopping (XGBoost, LSTM) and for the post-hoc calibration: class
weighting during training skews raw probabilities on purpose (the minority class is up-weighted),
and the calibrator maps them back to frequencies. Without a validation fold the model is
uncalibrated (identity) and trains for its fixed budget.

A saved model is a directory: ``model.json`` (kind, params, seed, calibrator, fit facts) plus the
kind's own files, none of them pickles except the random forest's skops file (pipeline.models.forest).
Directories are written under a temporary name and renamed into place, so a crash never leaves a
half-written model behind.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np

FORMAT_VERSION = 1
MODEL_FILE = "model.json"
# The four kinds, imported lazily: `import pipeline.models.base` must not pay for torch or xgboost.
KINDS = {
    "logistic": "pipeline.models.logistic:LogisticModel",
    "forest": "pipeline.models.forest:ForestModel",
    "xgb": "pipeline.models.xgb:XGBModel",
    "lstm": "pipeline.models.lstm:LSTMModel",
}
# A calibrated probability is kept this far from 0 and 1: an isotonic step reaching 0 or 1 on a finite
# validation fold is not a certainty, and log-loss would be infinite on the first counter-example.
PROBA_FLOOR = 1e-4

CalibrationMethod = Literal["isotonic", "platt", "none"]
M = TypeVar("M", bound="Model")


@runtime_checkable
class ProbabilityModel(Protocol):
    """What the ensemble, the tuner and (later) the serving export need of a model."""

    params: dict[str, Any]

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> ProbabilityModel: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def save(self, path: str | Path) -> Path: ...


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from raw to calibrated probabilities, fitted on a validation fold.

    ``isotonic`` stores the step function's knots (linear interpolation between them, as
    scikit-learn's IsotonicRegression predicts); ``platt`` stores ``a, b`` of
    ``sigmoid(a * logit(p) + b)``. Both are plain numbers, so they export to flat arrays.
    """

    method: CalibrationMethod = "none"
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0

    @classmethod
    def fit(cls, method: CalibrationMethod, p_raw: np.ndarray, y: np.ndarray) -> Calibrator:
        p_raw, y = np.asarray(p_raw, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if method == "none" or len(np.unique(y)) < 2:
            return cls()
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p_raw, y)
            return cls("isotonic", tuple(map(float, iso.X_thresholds_)), tuple(map(float, iso.y_thresholds_)))
        if method == "platt":
            a, b = _platt(_logit(p_raw), y)
            return cls("platt", a=a, b=b)
        raise ValueError(f"unknown calibration {method!r} (isotonic, platt or none)")

    def __call__(self, p_raw: np.ndarray) -> np.ndarray:
        p_raw = np.asarray(p_raw, dtype=np.float64)
        if self.method == "none":
            return p_raw
        if self.method == "isotonic":
            p = np.interp(p_raw, self.knots_x, self.knots_y)
        else:
            p = _sigmoid(self.a * _logit(p_raw) + self.b)
        return np.clip(p, PROBA_FLOOR, 1.0 - PROBA_FLOOR)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "knots_x": list(self.knots_x), "knots_y": list(self.knots_y),
                "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        return cls(data["method"], tuple(data["knots_x"]), tuple(data["knots_y"]), data["a"], data["b"])


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1.0 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for any z, no overflow warnings


def _platt(z: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Maximum-likelihood ``a, b`` of ``sigmoid(a z + b)`` by Newton steps (a two-parameter convex fit)."""
    a, b = 1.0, 0.0
    design = np.column_stack([z, np.ones_like(z)])
    for _ in range(iterations):
        p = _sigmoid(a * z + b)
        w = np.maximum(p * (1.0 - p), 1e-12)
        hessian = design.T @ (design * w[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, design.T @ (y - p))
        a, b = a + step[0], b + step[1]
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(a), float(b)


@dataclass
class Model(ABC):
    """Base of the four models: validation of inputs, calibration, the saved directory.

    A kind implements ``_fit`` (raw training, may early-stop on the validation fold),
    ``_raw_proba``, ``_save_state`` and ``_load_state``; ``fit_info`` records what training found
    (best iteration, epochs run, class weight) and is saved with the model.
    """

    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    calibration: CalibrationMethod = "isotonic"
    calibrator: Calibrator = field(default_factory=Calibrator)
    n_features: int | None = None
    fit_info: dict[str, Any] = field(default_factory=dict)

    kind: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.params) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.kind}: unknown params {unknown} (known: {sorted(self.defaults)})")
        self.params = {**self.defaults, **self.params}

    def fit(self: M, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> M:
        X, y = check_xy(X, y)
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        if X_val is not None:
            X_val, y_val = check_xy(X_val, y_val, n_features=X.shape[1])
        self.n_features = X.shape[1]
        self.fit_info = {"rows": len(y), "positive_rate": float(y.mean()),
                         "validation_rows": 0 if y_val is None else len(y_val)}
        self._fit(X, y, X_val, y_val)
        self.calibrator = Calibrator()
        if X_val is not None:
            self.calibrator = Calibrator.fit(self.calibration, self._raw_proba(X_val), y_val)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated P(y = 1) for each row, float64 ``[n]``."""
        return self.calibrator(self.raw_proba(X))

    def raw_proba(self, X: np.ndarray) -> np.ndarray:
        """The probability before calibration (what early stopping and the calibrator saw)."""
        if self.n_features is None:
            raise ValueError(f"{self.kind}: predict before fit")
        X = check_x(X, n_features=self.n_features)
        return np.asarray(self._raw_proba(X), dtype=np.float64)

    def save(self, path: str | Path) -> Path:
        if self.n_features is None:
            raise ValueError(f"{self.kind}: save before fit")
        with atomic_dir(path) as tmp:
            self.save_into(tmp)
        return Path(path)

    def save_into(self, directory: Path) -> None:
        """Write the model into an existing empty directory (the ensemble writes members this way)."""
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "params": self.params,
            "seed": self.seed,
            "calibration": self.calibration,
            "calibrator": self.calibrator.to_dict(),
            "n_features": self.n_features,
            "fit_info": self.fit_info,
        }
        (directory / MODEL_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        self._save_state(directory)

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """Load a saved model; ``Model.load`` dispatches on the saved kind, ``XGBModel.load`` checks it."""
        path = Path(path)
        meta = json.loads((path / MODEL_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: model format {meta.get('format_version')} is not {FORMAT_VERSION}")
        kind_cls = model_class(meta["kind"])
        if cls is not Model and kind_cls is not cls:
            raise ValueError(f"{path}: holds a {meta['kind']} model, not {cls.kind}")
        model = kind_cls(params=meta["params"], seed=meta["seed"], calibration=meta["calibration"])
        model.calibrator = Calibrator.from_dict(meta["calibrator"])
        model.n_features = meta["n_features"]
        model.fit_info = meta["fit_info"]
        model._load_state(path)
        return model

    @abstractmethod
    def _fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None) -> None: ...

    @abstractmethod
    def _raw_proba(self, X: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _save_state(self, directory: Path) -> None: ...

    @abstractmethod
    def _load_state(self, directory: Path) -> None: ...


def model_class(kind: str) -> type[Model]:
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def make_model(kind: str, params: Mapping[str, Any] | None = None, seed: int = 0,
               calibration: CalibrationMethod = "isotonic") -> Model:
    return model_class(kind)(params=dict(params or {}), seed=seed, calibration=calibration)


def positive_weight(y: np.ndarray) -> float:
    """negatives / positives: the weight that gives both classes the same total weight."""
    positives = int(y.sum())
    return (len(y) - positives) / positives if positives else 1.0


def check_x(X: np.ndarray, n_features: int | None = None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D [rows, features], got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, the model was fitted on {n_features}")
    if not np.isfinite(X).all():
        raise ValueError("X has NaN or infinite values (the feature store guarantees finite rows)")
    return X


def check_xy(X: np.ndarray, y: np.ndarray, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    X = check_x(X, n_features)
    y = np.asarray(y)
    if y.shape != (len(X),):
        raise ValueError(f"y must have one value per row of X: {y.shape} vs {len(X)} rows")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must be 0/1 (1 = label +1: the long take-profit was hit first)")
    if len(y) == 0 or y.min() == y.max():
        raise ValueError(f"y needs both classes to train on, got {len(y)} rows of class {y[:1]}")
    return X, y.astype(np.int64)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
