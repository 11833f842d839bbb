"""Classification metrics of P(up) against y in {0, 1}: pure numpy functions, no state.

``roc_auc`` and ``log_loss`` agree with scikit-learn's (ties count one half; probabilities clipped
to [1e-15, 1 - 1e-15]); the tests check this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

EPS = 1e-15


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y and p must be 1-D of the same length, got {y.shape} and {p.shape}")
    return y, p


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN with one class only."""
    y, p = _check(y, p)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    ranks = np.empty(len(p))
    # mid-rank of each run of equal probabilities
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    ends = np.r_[starts[1:], len(p)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _check(y, p)
    p = np.clip(p, EPS, 1.0 - EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _check(y, p)
    return float(np.mean((p - y) ** 2))


def confusion_matrix(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``[[tn, fp], [fn, tp]]`` (rows: actual 0/1, columns: predicted 0/1) with ``p >= threshold`` as 1."""
    y, p = _check(y, p)
    actual, predicted = y.astype(bool), p >= threshold
    return np.array([[np.sum(~actual & ~predicted), np.sum(~actual & predicted)],
                     [np.sum(actual & ~predicted), np.sum(actual & predicted)]], dtype=np.int64)


def precision_recall(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> tuple[float, float]:
    """Precision (NaN when nothing is predicted 1) and recall (NaN with no positives) at ``threshold``."""
    (_, fp), (fn, tp) = confusion_matrix(y, p, threshold)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    return float(precision), float(recall)


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram: per bin of predicted probability, how often y was 1."""

    edges: np.ndarray  # [bins + 1]
    count: np.ndarray  # [bins] rows per bin
    mean_predicted: np.ndarray  # [bins] NaN for an empty bin
    fraction_positive: np.ndarray  # [bins] NaN for an empty bin

    @property
    def expected_calibration_error(self) -> float:
        """Row-weighted mean |fraction positive - mean predicted| over non-empty bins."""
        filled = self.count > 0
        gap = np.abs(self.fraction_positive[filled] - self.mean_predicted[filled])
        return float(np.sum(gap * self.count[filled]) / np.sum(self.count[filled]))

    def to_dict(self) -> dict[str, list[float]]:
        return {k: np.asarray(v).tolist() for k, v in asdict(self).items()} | {
            "expected_calibration_error": self.expected_calibration_error}


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10,
                strategy: Literal["uniform", "quantile"] = "uniform") -> Reliability:
    """Reliability bins: ``uniform`` splits [0, 1] evenly, ``quantile`` puts equal rows in each bin."""
    y, p = _check(y, p)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, bins + 1)
    elif strategy == "quantile":
        edges = np.quantile(p, np.linspace(0.0, 1.0, bins + 1)) if len(p) else np.linspace(0.0, 1.0, bins + 1)
    else:
        raise ValueError(f"unknown strategy {strategy!r} (uniform or quantile)")
    # bin b holds edges[b] <= p < edges[b + 1]; the last bin also holds p == edges[-1]
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(which, weights=p, minlength=bins) / count
        fraction_positive = np.bincount(which, weights=y, minlength=bins) / count
    return Reliability(edges, count, mean_predicted, fraction_positive)


def classification_report(y: np.ndarray, p: np.ndarray, threshold: float = 0.5, bins: int = 10) -> dict:
    """The metrics above in one flat dict (what a run logs), plus the reliability bins."""
    precision, recall = precision_recall(y, p, threshold)
    (tn, fp), (fn, tp) = confusion_matrix(y, p, threshold)
    curve = reliability(y, p, bins)
    return {
        "rows": int(len(y)),
        "positive_rate": float(np.mean(y)) if len(y) else float("nan"),
        "auc": roc_auc(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier(y, p),
        "ece": curve.expected_calibration_error,
        "threshold": threshold,
        "precision": precision,
        "recall": recall,
        "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
        "reliability": curve.to_dict(),
    }
