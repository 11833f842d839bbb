"""Prefect flows: thin wiring, each task calls one function of ``pipeline`` or ``serving``.

Importing this package points Prefect (and MLflow) at AUTOSCALP_HOME before they are imported.
"""

from flows import _env

_env.configure()
