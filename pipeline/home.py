"""AUTOSCALP_HOME: the one directory everything the product writes lives under.

Pointing ``AUTOSCALP_HOME`` elsewhere moves a whole run (store, MLflow, Prefect, journal, reports).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "AUTOSCALP_HOME"
DEFAULT_HOME = ".autoscalp"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def prefect(self) -> Path:
        return self.root / "prefect"

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    @property
    def reports(self) -> Path:
        return self.root / "reports"


def autoscalp_home(environ: dict[str, str] | None = None) -> Home:
    env = os.environ if environ is None else environ
    return Home(Path(env.get(HOME_ENV) or DEFAULT_HOME).expanduser().absolute())
