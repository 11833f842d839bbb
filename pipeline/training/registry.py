"""The ensemble as one MLflow pyfunc model, and its registration as ``autoscalp-<slug>@challenger``.

Registered model names cannot hold ``/`` or ``:``, so a ccxt unified symbol is slugged by replacing
each with ``-``: ``BTC/USDT:USDT`` -> ``autoscalp-BTC-USDT-USDT`` (``ETH/USD:ETH`` ->
``autoscalp-ETH-USD-ETH``). The mapping is one-to-one for unified symbols (their parts are
``[A-Z0-9]+``), and ``symbol_slug`` is the only place it is spelled.

The pyfunc wraps the saved ensemble directory (pipeline.models.ensemble, no pickles but the random
forest's skops file, plus ``compiled/``: the four models as flat arrays for per-tick serving,
pipeline.models.compiled) as an artefact; ``predict`` takes a DataFrame with one column per selected
feature (rows in time order: the LSTM reads each row's preceding window) and returns P(up). Loading
it needs the ``pipeline`` package importable (the serving environment installs autoscalp); the
third-party requirements are written explicitly (STACK.md: inferring them costs seconds, and would
record a CUDA torch).

Registration is atomic from the registry's point of view: the version is created only after every
check and artefact succeeded, and when the alias cannot be set the version is deleted again, so no
version without its alias is left behind.
"""

from __future__ import annotations

import logging
import contextlib
import io
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from pipeline.errors import AutoscalpError

log = logging.getLogger(__name__)

MODEL_PREFIX = "autoscalp-"
CHALLENGER = "challenger"
ARTIFACT_KEY = "ensemble"
COMPILED_DIR = "compiled"  # inside the ensemble artefact: pipeline.models.compiled.save_compiled
# (distribution, the name pip installs it by): xgboost-cpu provides the `xgboost` module (STACK.md).
REQUIREMENTS = (("mlflow", "mlflow"), ("numpy", "numpy"), ("pandas", "pandas"), ("scipy", "scipy"),
                ("scikit-learn", "scikit-learn"), ("skops", "skops"), ("xgboost-cpu", "xgboost-cpu"),
                ("torch", "torch"))


class RegistryError(AutoscalpError):
    """The model could not be registered (nothing was left half-registered)."""


def symbol_slug(symbol: str) -> str:
    return symbol.replace("/", "-").replace(":", "-")


def model_name(symbol: str) -> str:
    return MODEL_PREFIX + symbol_slug(symbol)


def pip_requirements() -> list[str]:
    out = []
    for distribution, name in REQUIREMENTS:
        try:
            version = importlib_metadata.version(distribution).split("+")[0]  # torch 2.13.0+cpu -> 2.13.0
        except importlib_metadata.PackageNotFoundError:
            continue
        out.append(f"{name}=={version}")
    return out


# MLflow warns at every PythonModel subclass' definition that predict() has no type hints (it would
# validate inputs against them), forcing the warning past any filter; the signature logged with the
# model already describes the input, so it would only be noise on every command's stderr.
with contextlib.redirect_stderr(io.StringIO()):

    class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
        """``mlflow.pyfunc`` face of a saved ``Ensemble`` directory."""

        def load_context(self, context) -> None:  # noqa: ANN001 (MLflow's PythonModelContext)
            from pipeline.models.ensemble import Ensemble

            self.ensemble = Ensemble.load(context.artifacts[ARTIFACT_KEY])

        def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 (MLflow's signature)
            return self.ensemble.predict_frame(model_input)


def log_ensemble(ensemble_dir: Path, ensemble: Any, X_example: np.ndarray, extra_metadata: dict,
                 drift_reference: Any = None) -> Any:
    """Log the ensemble as a pyfunc model into the active run; returns MLflow's ``ModelInfo``.
    ``drift_reference`` (pipeline.monitoring.drift.ReferenceBins of the training rows) is saved
    beside ``compiled/`` for the daemon's drift metrics."""
    import pandas as pd
    from mlflow.models import infer_signature

    from pipeline.models.compiled import save_compiled

    # The serving form beside the library form: flat arrays the daemon evaluates per tick (no pickle).
    save_compiled(ensemble, Path(ensemble_dir) / COMPILED_DIR)
    if drift_reference is not None:
        from pipeline.monitoring.drift import save_reference

        save_reference(drift_reference, ensemble_dir)
    columns = list(ensemble.feature_names)
    example = pd.DataFrame(X_example, columns=columns)
    signature = infer_signature(example, ensemble.predict_frame(example))
    return mlflow.pyfunc.log_model(
        name="ensemble",
        python_model=str(Path(__file__).with_name("pyfunc_model.py")),
        artifacts={ARTIFACT_KEY: str(ensemble_dir)},
        pip_requirements=pip_requirements(),
        signature=signature,
        input_example=example,
        metadata={
            "feature_names": columns,
            "label_spec": ensemble.label_spec,
            "features_version": ensemble.features_version,
            "weights": ensemble.weights,
            **extra_metadata,
        },
    )


@dataclass(frozen=True)
class Registered:
    name: str
    version: int
    alias: str
    uri: str  # models:/name@alias


def register_challenger(model_uri: str, symbol: str, tags: dict[str, str], run_id: str) -> Registered:
    """Create a version of ``autoscalp-<slug>`` from a logged model and point ``challenger`` at it."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    name = model_name(symbol)
    try:
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name, description=f"autoscalp ensemble for {symbol}")
        # a tracking server accepts a models:/<id> source only with that model_id (the SQLite store does not check)
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        version = client.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id)
    except MlflowException as exc:
        raise RegistryError(f"registering {name}: {str(exc).splitlines()[0]}") from None
    try:
        client.set_registered_model_alias(name, CHALLENGER, version.version)
    except BaseException as exc:
        log.error("setting %s@%s failed; deleting version %s", name, CHALLENGER, version.version)
        client.delete_model_version(name, version.version)
        if isinstance(exc, MlflowException):
            raise RegistryError(f"aliasing {name} v{version.version}: {str(exc).splitlines()[0]}") from None
        raise
    return Registered(name, int(version.version), CHALLENGER, f"models:/{name}@{CHALLENGER}")
