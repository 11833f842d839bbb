"""Drift that lasts asks for an early retrain.

``DriftTrigger``: when the largest feature PSI of the trading model stays above
``serve.drift_retrain_psi`` for ``serve.drift_retrain_after_s`` it says so, once per
``serve.drift_retrain_cooldown_s`` (a retrain takes a while, and the next champion needs time on
the market before its own drift means anything). A PSI that is unknown (too few rows since the
model started) or dips below the threshold starts the wait again; so does a model swap.

``request_retrain``: a flow run of the ``retrain`` deployment (``autoscalp schedule`` serves it,
flows/schedule.py) on the Prefect API the environment configures (PREFECT_API_URL or the active
profile), with parameters ``{trigger: <reason>, symbols: [<symbol>]}``. It returns at once
(``timeout=0``): the run waits in the deployment's queue for whatever serves it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.errors import AutoscalpError

RETRAIN_DEPLOYMENT = "retrain/retrain"  # "<flow name>/<deployment name>": flows/retrain.py, flows/schedule.py
DRIFT_TAG = "autoscalp-drift"


class RetrainRequestError(AutoscalpError):
    """The retrain deployment could not be asked for a run."""


class DriftTrigger:
    def __init__(self, threshold: float, after_s: float, cooldown_s: float,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.threshold, self.after_s, self.cooldown_s, self.clock = threshold, after_s, cooldown_s, clock
        self.above_since: float | None = None
        self.last_request: float | None = None  # clock() of the last request (restored from the journal)

    def reset(self) -> None:
        """A new model (a new reference): the wait starts again; the cooldown does not."""
        self.above_since = None

    def update(self, max_psi: float, feature: str) -> str | None:
        """The latest reading; the retrain reason when one is due now, else None."""
        now = self.clock()
        if not max_psi > self.threshold:  # NaN too: unknown is not drift
            self.above_since = None
            return None
        if self.above_since is None:
            self.above_since = now
        if now - self.above_since < self.after_s:
            return None
        if self.last_request is not None and now - self.last_request < self.cooldown_s:
            return None
        self.last_request = now
        return f"drift: psi {max_psi:.2f} on {feature} for {now - self.above_since:.0f} s"

    def cooling_down(self) -> bool:
        return self.last_request is not None and self.clock() - self.last_request < self.cooldown_s


def prefect_api_url() -> str | None:
    """The Prefect API this process would talk to (PREFECT_API_URL or the profile's), or None."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def request_retrain(reason: str, symbol: str, deployment: str = RETRAIN_DEPLOYMENT,
                    idempotency_key: str | None = None) -> str:  # fmt: skip
    """Create a run of the retrain deployment for ``symbol``; returns the flow run's id. Raises on
    an unreachable API or a missing deployment (Prefect's ObjectNotFound)."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    name = f"retrain {symbol} ({reason})"[:120]
    try:
        run = run_deployment(deployment, parameters={"trigger": reason, "symbols": [symbol]}, timeout=0,
                             flow_run_name=name, tags=[DRIFT_TAG], as_subflow=False,
                             idempotency_key=idempotency_key)  # fmt: skip
    except ObjectNotFound:
        raise RetrainRequestError(f"no deployment {deployment!r} on the Prefect API: is `autoscalp schedule` "
                                  "serving it there?") from None  # fmt: skip
    return str(run.id)
