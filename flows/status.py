"""What ``autoscalp status`` reports, gathered read-only from the three places it lives:

- the MLflow registry: the ``champion`` and ``challenger`` of each symbol, with the latest backtest of
  each version (the runs ``autoscalp backtest`` and the promotion gate log, serving/backtest/evaluation.py:
  param ``model`` = the version's URI, metrics ``bt_<headline>``);
- the Prefect API (PREFECT_API_URL or the Prefect profile's): the ``retrain`` and ``ingest``
  deployments (flows/schedule.py), their schedules, last finished and next scheduled runs;
- the daemon's HTTP face (serve.host:serve.http_port): /health and /metrics.

Each part is a dict; one that cannot be read is ``{"unavailable": "<reason>"}``, never an exception.
Nothing is created: a missing MLflow store stays missing (tracking.connect would create one).
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.config import ProductConfig

TIMEOUT_S = 3.0
ROLES = ("champion", "challenger")  # pipeline.training.aliases.CHAMPION, registry.CHALLENGER
FINISHED = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]
BACKTEST_PREFIX = "bt_"  # serving.backtest.evaluation.log_backtest: f"bt_{headline metric}"


def unavailable(reason: str) -> dict[str, str]:
    return {"unavailable": reason}


def guarded(part: Callable[[], dict]) -> dict:
    """A part's dict, or why it could not be read (one line)."""
    try:
        return part()
    except Exception as exc:  # noqa: BLE001 (status must degrade, whatever a store or server raises)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return unavailable(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


def gather(config: ProductConfig, prefect_api: str | None = None, daemon_url: str | None = None,
           clock: Callable[[], float] = time.time) -> dict[str, Any]:  # fmt: skip
    return {
        "at": clock(),
        "models": guarded(lambda: models(config, clock)),
        "schedule": guarded(lambda: schedule(prefect_api)),
        "daemon": guarded(lambda: daemon(config, daemon_url)),
    }


# ---- the registry ------------------------------------------------------------------------------


def models(config: ProductConfig, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipeline.training import tracking
    from pipeline.training.registry import model_name

    uri = tracking.tracking_uri(config.training.tracking)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return unavailable(f"no MLflow store at {uri.removeprefix('sqlite:///')}: run `autoscalp train` first")
    tracking.check_reachable(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(config.training.tracking.experiment)
    out: dict[str, Any] = {"tracking_uri": uri, "symbols": {}}
    for symbol in config.symbols:
        name = model_name(symbol)
        entry: dict[str, Any] = {"registered_model": name}
        for role in ROLES:
            try:
                mv = client.get_model_version_by_alias(name, role)
            except MlflowException:
                entry[role] = None
                continue
            entry[role] = _version(client, experiment, mv, clock)
        out["symbols"][symbol] = entry
    return out


def _version(client, experiment, mv, clock: Callable[[], float]) -> dict[str, Any]:  # noqa: ANN001 (MLflow types)
    created_s = int(mv.creation_timestamp) / 1e3 if mv.creation_timestamp is not None else None
    uri = f"models:/{mv.name}/{mv.version}"
    tags = dict(mv.tags or {})
    return {
        "version": int(mv.version),
        "uri": uri,
        "aliases": list(mv.aliases or ()),
        "created_s": created_s,
        "age_s": clock() - created_s if created_s is not None else None,
        "run_id": mv.run_id,
        "oos_auc": _float(tags.get("autoscalp.oos_auc")),
        "serve_tick_us": _float(tags.get("autoscalp.serve_tick_us")),  # measured at its retrain
        "backtest": _latest_backtest(client, experiment, uri),
    }


def _latest_backtest(client, experiment, uri: str) -> dict[str, Any] | None:  # noqa: ANN001
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], filter_string=f"params.model = '{uri}'",
                              order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    if not runs:
        return None
    run = runs[0]
    metrics = {k.removeprefix(BACKTEST_PREFIX): v for k, v in run.data.metrics.items() if k.startswith(BACKTEST_PREFIX)}
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "kind": run.data.tags.get("autoscalp.kind"),
        "promoted": run.data.tags.get("autoscalp.promoted"),
        "started_s": run.info.start_time / 1e3 if run.info.start_time else None,
        "metrics": metrics,
    }


# ---- the scheduler -----------------------------------------------------------------------------


def prefect_api_url(explicit: str | None = None) -> str | None:
    """The Prefect API: given, else $PREFECT_API_URL, else the active Prefect profile's setting."""
    if explicit or os.environ.get("PREFECT_API_URL"):
        return explicit or os.environ["PREFECT_API_URL"]
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def schedule(explicit_api: str | None = None) -> dict[str, Any]:
    from flows.schedule import INGEST_DEPLOYMENT, RETRAIN_DEPLOYMENT  # imports the flows: only when asked

    api = prefect_api_url(explicit_api)
    if not api:
        return unavailable("no scheduler running: PREFECT_API_URL is not set (`autoscalp up`, or `autoscalp schedule` "
                           "against a Prefect server)")  # fmt: skip
    api = api.rstrip("/")
    try:
        _request(f"{api}/health")
    except OSError as exc:
        return unavailable(f"no scheduler running: the Prefect API {api} does not answer ({_reason(exc)})")
    names = [RETRAIN_DEPLOYMENT, INGEST_DEPLOYMENT]
    found = _request(f"{api}/deployments/filter", {"deployments": {"name": {"any_": names}}, "limit": 20})
    out: dict[str, Any] = {"api": api, "deployments": {}}
    for deployment in sorted(found, key=lambda d: names.index(d["name"])):
        runs = lambda states, sort: _request(f"{api}/flow_runs/filter", {  # noqa: E731
            "deployments": {"id": {"any_": [deployment["id"]]}},
            "flow_runs": {"state": {"type": {"any_": states}}}, "sort": sort, "limit": 1})
        last, upcoming, running = runs(FINISHED, "END_TIME_DESC"), runs(["SCHEDULED"], "EXPECTED_START_TIME_ASC"), \
            runs(["RUNNING", "PENDING"], "START_TIME_DESC")  # fmt: skip
        out["deployments"][deployment["name"]] = {
            "id": deployment["id"],
            "paused": bool(deployment.get("paused")),
            "schedules": [_describe_schedule(s) for s in deployment.get("schedules") or []],
            "last_run": _run(last[0], "end_time") if last else None,
            "running": _run(running[0], "start_time") if running else None,
            "next_run": _run(upcoming[0], "expected_start_time") if upcoming else None,
        }
    if not out["deployments"]:
        return unavailable(f"no retrain or ingest deployment on {api}: start them with `autoscalp schedule`")
    return out


def _describe_schedule(entry: dict) -> str:
    schedule, active = entry.get("schedule") or {}, entry.get("active", True)
    if "interval" in schedule:
        text = f"every {_duration(float(schedule['interval']))}"
    elif "cron" in schedule:
        text = f"cron {schedule['cron']} ({schedule.get('timezone') or 'UTC'})"
    elif "rrule" in schedule:
        text = f"rrule {schedule['rrule']}"
    else:
        text = json.dumps(schedule)
    return text if active else f"{text} (inactive)"


def _run(run: dict, time_key: str) -> dict[str, Any]:
    return {"name": run.get("name"), "state": run.get("state_name") or run.get("state_type"), "at": run.get(time_key)}


# ---- the daemon --------------------------------------------------------------------------------


def daemon_base_url(config: ProductConfig, explicit: str | None = None) -> str | None:
    if explicit:
        return explicit.rstrip("/")
    serve = config.serve
    if serve.http_port == 0:
        return None
    host = "127.0.0.1" if serve.host in ("0.0.0.0", "::", "") else serve.host  # a wildcard bind answers locally
    return f"http://{host}:{serve.http_port}"


def daemon(config: ProductConfig, explicit_url: str | None = None) -> dict[str, Any]:
    base = daemon_base_url(config, explicit_url)
    if base is None:
        return unavailable("serve.http_port is 0 (a free port each start): pass --daemon http://HOST:PORT")
    try:
        health = _request(f"{base}/health")
        exposition = _request(f"{base}/metrics", raw=True)
    except OSError as exc:
        return unavailable(f"daemon not running: nothing answers on {base} ({_reason(exc)})")
    except ValueError:
        # e.g. Dask's dashboard, which also defaults to port 8787
        return unavailable(f"{base} answers, but not as an autoscalp daemon (/health is not JSON): check serve.http_port")
    return {"url": base, "health": health, "metrics": parse_metrics(exposition.decode())}


def parse_metrics(text: str) -> dict[str, Any]:
    """The headline figures of the daemon's exposition (serving/runtime/telemetry.py's names)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {"kill_switch": None, "symbols": {}}
    per_symbol = {"autoscalp_position_qty": "position_qty", "autoscalp_leverage": "leverage",
                  "autoscalp_model_version": "model_version", "autoscalp_model_age_seconds": "model_age_s",
                  "autoscalp_model_alert": "model_alert", "autoscalp_hit_rate": "hit_rate",
                  "autoscalp_feature_psi_max": "drift_psi_max"}  # fmt: skip
    plain = {"autoscalp_equity_usdt": "equity_usdt", "autoscalp_pnl_usdt": "pnl_usdt",
             "autoscalp_drawdown_ratio": "drawdown_ratio", "autoscalp_ticks_total": "ticks",
             "autoscalp_queue_depth": "queue_depth"}  # fmt: skip
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            value = _finite(sample.value)
            if sample.name == "autoscalp_kill_switch" and sample.value == 1.0:
                out["kill_switch"] = sample.labels.get("state")
            elif sample.name in plain:
                out[plain[sample.name]] = value
            elif sample.name in per_symbol and "symbol" in sample.labels:
                figures = out["symbols"].setdefault(sample.labels["symbol"], dict.fromkeys(per_symbol.values()))
                figures[per_symbol[sample.name]] = value
    return out


# ---- plumbing ----------------------------------------------------------------------------------


def _request(url: str, body: dict | None = None, raw: bool = False) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        payload = response.read()
    return payload if raw else json.loads(payload)


def _reason(exc: OSError) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(getattr(reason, "strerror", None) or reason)


def _float(value: Any) -> float | None:
    try:
        return _finite(float(value))
    except (TypeError, ValueError):
        return None


def _finite(value: float) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s" if seconds < 3600 else f"{seconds / 3600:.2f} h"
