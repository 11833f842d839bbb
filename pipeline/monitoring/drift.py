"""Feature drift against training: reference bins stored with each registered version, and PSI.

At registration (pipeline.training.cycle) the training rows of the selected features are cut into
quantile bins; the inner edges and each bin's share of the rows are saved as ``drift_reference.json``
in the version's ensemble artefact, beside ``compiled/``. The daemon reads it back when it loads the
version (``load_reference``) and compares the live feature distribution with it
(serving.runtime.telemetry.DriftMonitor). Versions registered before references were stored have
none: ``load_reference`` returns None and the daemon reports "no drift reference".

PSI (population stability index) per feature: sum over bins (a - e) ln(a / e) of the live share a
and the training share e. Rules of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a shift.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DRIFT_REFERENCE_FILE = "drift_reference.json"  # inside the ensemble artefact, beside compiled/
PSI_EPS = 1e-4  # an empty bin's share: PSI is undefined at 0 (a common floor)
DEFAULT_BINS = 10


@dataclass(frozen=True)
class ReferenceBins:
    """Per feature, inner bin edges ([k, bins - 1], ascending) and the training rows' share in each
    bin ([k, bins]). Bin b holds edges[b - 1] <= x < edges[b] (``np.searchsorted`` side right)."""

    names: tuple[str, ...]
    edges: np.ndarray
    expected: np.ndarray
    rows: int = 0  # training rows the shares were counted on (0: unknown)

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "edges": self.edges.tolist(), "expected": self.expected.tolist(),
                "rows": self.rows}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReferenceBins:
        names = tuple(data["names"])
        edges, expected = np.asarray(data["edges"], float), np.asarray(data["expected"], float)
        if expected.ndim != 2 or len(names) != expected.shape[0] or edges.shape != (len(names), expected.shape[1] - 1):
            raise ValueError(f"drift reference: {len(names)} names, edges {edges.shape}, shares {expected.shape} "
                             "do not fit together")
        return cls(names, edges, expected, int(data.get("rows", 0)))


def reference_bins(X: np.ndarray, names: Sequence[str], bins: int = DEFAULT_BINS) -> ReferenceBins:
    """Quantile bins of training rows X ([rows, k], NaN ignored) and their shares. A feature with no
    finite value gets NaN edges (its live values then all fall in bin 0) and zero shares."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"reference_bins: {len(names)} names for rows of shape {X.shape}")
    qs = np.arange(1, bins) / bins
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: reported by zero shares
        edges = np.nanquantile(X, qs, axis=0).T.copy()  # [k, bins - 1]
    expected = np.zeros((X.shape[1], bins))
    for j in range(X.shape[1]):
        column = X[:, j][np.isfinite(X[:, j])]
        if len(column):
            counts = np.bincount(np.searchsorted(edges[j], column, side="right"), minlength=bins)
            expected[j] = counts / len(column)
    return ReferenceBins(tuple(names), edges, expected, int(X.shape[0]))


def psi(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Population stability index per row of [k, bins] shares: sum (a - e) ln(a / e)."""
    a = np.maximum(actual, PSI_EPS)
    e = np.maximum(expected, PSI_EPS)
    return ((a - e) * np.log(a / e)).sum(axis=1)


def save_reference(reference: ReferenceBins, directory: str | Path) -> Path:
    """Write ``drift_reference.json`` into ``directory`` (temp + rename: never half a file)."""
    path = Path(directory) / DRIFT_REFERENCE_FILE
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(reference.to_json()))
    os.replace(temp, path)
    return path


def read_reference(directory: str | Path) -> ReferenceBins | None:
    """The reference saved in ``directory``; None when there is none (raises on a corrupt one)."""
    path = Path(directory) / DRIFT_REFERENCE_FILE
    if not path.is_file():
        return None
    return ReferenceBins.from_json(json.loads(path.read_text()))


def load_reference(model_uri: str) -> ReferenceBins | None:
    """The drift reference of a registered version (``models:/name/7``), read from its ensemble
    artefact; None for a version registered without one. Raises when the artefact cannot be read."""
    import mlflow.artifacts
    from mlflow.models import Model

    from pipeline.training.registry import ARTIFACT_KEY

    local = Path(mlflow.artifacts.download_artifacts(model_uri))  # a local store: its own directory
    pyfunc = Model.load(str(local / "MLmodel")).flavors["python_function"]
    return read_reference(local / pyfunc["artifacts"][ARTIFACT_KEY]["path"])
