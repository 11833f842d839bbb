"""MLflow tracking: where runs go, what every run is tagged with, and the artefacts of a cycle.

Embedded by default: tracking and registry in ``sqlite:///$AUTOSCALP_HOME/mlflow/mlflow.db``,
artefacts under ``$AUTOSCALP_HOME/mlflow/artifacts`` (set on the experiment when it is created, so
nothing lands in ./mlruns of whatever directory a command ran in). ``training.tracking.uri`` in the
config, else ``MLFLOW_TRACKING_URI``, points it anywhere else: another database
(``postgresql://user@host/db``, psycopg2; tracking and registry both) or a tracking server
(``http://host:5000``), which keeps its own artefact store. ``training.tracking.artifact_location``
puts a new experiment's artefacts on any MLflow artifact URI (``s3://bucket/prefix``, ``file:///...``).

Autologging stays off (STACK.md: it turns an 18 ms fit into 4.6 s and makes a run per trial of
its own); metrics go in batches (``log_metrics`` / ``log_batch``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import TrackingConfig
from pipeline.errors import AutoscalpError
from pipeline.home import autoscalp_home

PROBE_TIMEOUT_S = 5.0
REPO = Path(__file__).resolve().parents[2]


class TrackingError(AutoscalpError):
    """The tracking or registry store cannot be reached or written."""


def embedded_uri() -> str:
    path = autoscalp_home().mlflow / "mlflow.db"
    return f"sqlite:///{path}"


def artifact_root() -> Path:
    return autoscalp_home().mlflow / "artifacts"


def tracking_uri(config: TrackingConfig | None = None) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else the embedded SQLite store."""
    if config is not None and config.uri:
        return config.uri
    return os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri()


def check_reachable(uri: str) -> None:
    """Fail in seconds with one line when the store cannot be reached (MLflow's own client retries an
    unreachable server for minutes); called before anything is trained or registered."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S) as response:
                if response.status != 200:
                    raise TrackingError(f"MLflow tracking server {uri} answered {response.status} to /health")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"MLflow tracking server {uri} is unreachable ({reason}); start it or fix "
                                "training.tracking.uri / MLFLOW_TRACKING_URI") from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"MLflow store {uri}: cannot create {path.parent} ({exc.strerror})") from None


def experiment_artifact_location(uri: str, config: TrackingConfig) -> str | None:
    """Where a new experiment keeps its artefacts: the configured location; else, for a database reached
    directly (SQLite, PostgreSQL...), under AUTOSCALP_HOME (MLflow's own default there is ./mlruns of
    whatever directory the command ran in); else (a tracking server) None: the server decides."""
    if config.artifact_location:
        return config.artifact_location
    return None if uri.startswith(("http://", "https://")) else artifact_root().as_uri()


def connect(config: TrackingConfig) -> tuple[str, str]:
    """Point MLflow at the store, create the experiment if needed; returns (uri, experiment id)."""
    import mlflow

    uri = tracking_uri(config)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        experiment = mlflow.get_experiment_by_name(config.experiment)
        if experiment is not None:
            return uri, experiment.experiment_id
        location = experiment_artifact_location(uri, config)
        if location and location.startswith("file://"):
            Path(location.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        return uri, mlflow.create_experiment(config.experiment, artifact_location=location)
    except AutoscalpError:
        raise
    except Exception as exc:
        raise TrackingError(f"MLflow store {uri}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


# ---- tags ---------------------------------------------------------------------------------


def git_sha() -> str:
    """The code version: the commit, with ``-dirty`` when the working tree has changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if sha and dirty else (sha or "unknown")


def config_hash(config: Any) -> str:
    """Hash of a pydantic config (the sections a cycle depends on)."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def finite_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric, finite entries (MLflow refuses NaN in some stores, and NaN says nothing)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
            if math.isfinite(float(value)):
                out[f"{prefix}{key}"] = float(value)
    return out


# ---- artefacts: plots as PNG (matplotlib, Agg) with their numbers as JSON/CSV beside them -------


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _figure().close(fig)
    return buffer.getvalue()


def reliability_png(curves: dict[str, dict], title: str) -> bytes:
    """Reliability diagram of one or several models (``metrics.Reliability.to_dict()`` each)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for name, curve in curves.items():
        x, y = np.array(curve["mean_predicted"], float), np.array(curve["fraction_positive"], float)
        keep = np.isfinite(x) & np.isfinite(y)
        ax.plot(x[keep], y[keep], marker="o", label=f"{name} (ECE {curve['expected_calibration_error']:.3f})")
    ax.set(xlabel="mean predicted P(up)", ylabel="fraction up", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7)
    return _png(fig)


def confusion_png(report: dict, title: str) -> bytes:
    plt = _figure()
    matrix = np.array([[report["tn"], report["fp"]], [report["fn"], report["tp"]]])
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, f"{count:,}", ha="center", va="center")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["pred 0", "pred 1"], yticklabels=["actual 0", "actual 1"],
           title=f"{title} (p >= {report['threshold']:g})")
    return _png(fig)


def importance_png(names: list[str], drops: list[float], title: str) -> bytes:
    plt = _figure()
    order = np.argsort(drops)
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(names) + 1))
    ax.barh([names[i] for i in order], [drops[i] for i in order])
    ax.set(xlabel="AUC drop when the feature is shuffled (held-out block)", title=title)
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def optuna_history_png(values: list[float | None], minimize: bool, title: str) -> bytes:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    x = [i for i, v in enumerate(values) if v is not None]
    y = [v for v in values if v is not None]
    ax.scatter(x, y, s=12, label="trial")
    if y:
        best = np.minimum.accumulate(y) if minimize else np.maximum.accumulate(y)
        ax.step(x, best, where="post", color="red", label="best so far")
    ax.set(xlabel="trial", ylabel="objective", title=title)
    ax.legend(fontsize=7)
    return _png(fig)


def log_png(client, run_id: str, data: bytes, path: str) -> None:
    """Log PNG bytes as an artefact (through a temporary file: MLflow logs files)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / Path(path).name
        target.write_bytes(data)
        directory = str(Path(path).parent) if str(Path(path).parent) != "." else None
        client.log_artifact(run_id, str(target), directory)


def log_json(client, run_id: str, data: Any, path: str) -> None:
    client.log_text(run_id, json.dumps(data, indent=2, sort_keys=True, default=_jsonable), path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
