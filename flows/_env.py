"""Environment for the embedded stack, set before Prefect or MLflow are imported.

Prefect keeps its database under AUTOSCALP_HOME/prefect unless PREFECT_HOME or PREFECT_API_URL
says otherwise; with no PREFECT_API_URL a flow run starts Prefect's temporary local server on
127.0.0.1. Values the user already set are never overridden.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.home import autoscalp_home


def configure() -> None:
    home = autoscalp_home()
    defaults = {
        "PREFECT_HOME": str(home.prefect),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # A first start on a busy 2-core machine can take longer than Prefect's default 20 s.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_LOG_PRINTS": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "DO_NOT_TRACK": "1",
        # Our own loggers' records reach the Prefect UI too when they run inside a flow.
        "PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline,serving",
        # ... and outside a flow run (--no-prefect, tests) they are not sent, without a warning.
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def console_logging(verbose: bool) -> None:
    """Terminal output of a CLI run: our loggers at WARNING (INFO when verbose).

    Prefect's own console output (run states, tracebacks of expected input errors) is shown only
    when verbose; its run logs always reach the Prefect API and UI.
    """
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO" if verbose else "CRITICAL")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    for name in ("pipeline", "serving", "flows"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
        logger.propagate = False
