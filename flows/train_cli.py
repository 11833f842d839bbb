"""``autoscalp train``, ``autoscalp ui`` and ``autoscalp schedule``: the retrain cycle from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from flows._cli_common import ConfigOption, JsonOption, PrefectOption, _config, stdout, user_errors


def train_command(
    config: ConfigOption = None,
    symbol: Annotated[
        Optional[list[str]], typer.Option("--symbol", "-s", help="ccxt unified symbol; repeatable (default: all).")
    ] = None,
    trials: Annotated[Optional[int], typer.Option(min=1, help="Optuna trials per model (default: config).")] = None,
    timeout: Annotated[
        Optional[float], typer.Option(min=1, help="Tuning wall-clock seconds per model (default: config).")
    ] = None,
    ingest: Annotated[bool, typer.Option("--ingest", help="Ingest new data first (sources.default).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Retrain even when data and config are unchanged.")] = False,
    prefect: PrefectOption = True,
    as_json: JsonOption = False,
) -> None:
    """Run one retrain cycle: features -> tune and fit the four models -> evaluate on the held-back
    block -> register the ensemble as autoscalp-<symbol slug>@challenger in MLflow."""
    from flows.retrain import retrain_flow_for, retrain_in_process, with_budget

    cfg = _config(config)
    config_path = str(config) if config else None
    with user_errors():
        if prefect:
            results = retrain_flow_for(cfg)(symbols=list(symbol or []) or None, trials=trials, timeout_s=timeout,
                                            ingest=ingest, force=force, config_path=config_path, trigger="manual")
        else:
            if ingest:
                raise typer.BadParameter("--ingest needs the Prefect flow; run `autoscalp ingest` first")
            results = retrain_in_process(list(symbol or []) or None, with_budget(cfg, trials, timeout), config_path)
    if as_json:
        print(json.dumps(results, indent=2, default=str))
        return
    for result in results:
        print_summary(result)


def print_summary(result: dict) -> None:
    split = result["split"]
    table = Table("model", "OOS AUC", "log-loss", "Brier", "precision", "recall", "tune s", "fit s",
                  title=(f"{result['symbol']}: held-back block of {split['test_rows']:,} rows "
                         f"(trained on {split['train_rows']:,}, validated on {split['validation_rows']:,})"))
    for kind, r in result["models"].items():
        o = r["oos"]
        table.add_row(kind, _f(o["auc"]), _f(o["log_loss"]), _f(o["brier"]), _f(o["precision"]), _f(o["recall"]),
                      f"{r['tune_s']:.1f}", f"{r['fit_s']:.1f}")
    o = result["ensemble"]["oos"]
    weights = " ".join(f"{k} {w:.2f}" for k, w in result["ensemble"]["weights"].items())
    table.add_row(f"ensemble ({weights})", _f(o["auc"]), _f(o["log_loss"]), _f(o["brier"]), _f(o["precision"]),
                  _f(o["recall"]), "", f"{result['timings'].get('ensemble_s', 0):.1f}")
    stdout.print(table)
    c = result["comparison"]
    verdict = "beats" if c["ensemble_beats_best_auc"] else "does not beat"
    stdout.print(f"ensemble {verdict} the best single model ({c['best_single']}): AUC {_f(c['ensemble_auc'])} vs "
                 f"{_f(c['best_single_auc'])} ({c['ensemble_minus_best_auc']:+.4f}), log-loss "
                 f"{c['ensemble_minus_best_log_loss']:+.4f}, Brier {c['ensemble_minus_best_brier']:+.4f}")
    registered = result.get("registered")
    if registered:
        stdout.print(f"registered {registered['name']} version {registered['version']} "
                     f"(alias {registered['alias']}: {registered['uri']})")
    feedback = result.get("feedback") or {}
    live = feedback.get("metrics") or {}
    if live:
        stdout.print(f"serving champion v{feedback['params'].get('champion_version')} live: {live['fills']} fills, "
                     f"net PnL {live['net_pnl_usdt']:+.2f} USDT (fees {live['fees_usdt']:.2f}), hit rate "
                     f"{_f(live.get('hit_rate', float('nan')))}")  # fmt: skip
    for note in feedback.get("notes", ()):
        stdout.print(f"[dim]live feedback: {note}[/]")
    promotion = result.get("promotion")
    if promotion:
        verdict = "promoted to champion" if promotion["promote"] else "not promoted"
        stdout.print(f"promotion gate: {verdict}" + "".join(f"\n  - {r}" for r in promotion["reasons"]))
    stdout.print(f"MLflow run {result['run_id']} at {result['tracking_uri']}; cycle "
                 f"{result['timings'].get('cycle_s', 0):.0f} s, features {result['timings'].get('features_s', 0):.0f} s")


def _f(value: float) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"


def ui_argv(port: int, config_path: Path | None) -> list[str]:
    """``mlflow ui`` on 127.0.0.1, pointed at the configured store (the embedded one by default)."""
    from pipeline.training.tracking import artifact_root, embedded_uri, tracking_uri

    uri = tracking_uri(_config(config_path).training.tracking)
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
            "--port", str(port)]
    if uri == embedded_uri():
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        argv += ["--default-artifact-root", artifact_root().as_uri()]
    return argv


def ui_command(
    config: ConfigOption = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Start the MLflow UI on 127.0.0.1 over the tracking store (Ctrl-C stops it)."""
    from pipeline.training.tracking import tracking_uri

    uri = tracking_uri(_config(config).training.tracking)
    if uri.startswith(("http://", "https://")):
        stdout.print(f"runs are tracked on the server {uri}: open it in a browser")
        return
    argv = ui_argv(port, config)
    stdout.print(f"MLflow UI on http://127.0.0.1:{port} ({uri})")
    try:
        raise typer.Exit(subprocess.call(argv))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def schedule_command(config: ConfigOption = None) -> None:
    """Register the ingest and retrain deployments with their schedules (config `schedule`) and serve
    them until Ctrl-C; with `schedule.work_pool` set, deploy them to that Prefect work pool instead and
    return (`prefect worker start --pool NAME` runs them). Uses PREFECT_API_URL when set, else Prefect's
    local server (a work pool needs a running server: set PREFECT_API_URL)."""
    from flows.schedule import deploy_to_pool, serve_deployments

    cfg = _config(config)
    config_path = str(config.resolve()) if config else None
    with user_errors():
        pool = cfg.schedule.work_pool
        if not pool:
            serve_deployments(cfg, config_path)
            return
        from prefect.settings import get_current_settings

        from pipeline.errors import AutoscalpError

        if not get_current_settings().api.url:
            raise AutoscalpError(f"schedule.work_pool is {pool!r}: deployments for workers need a running "
                                 "Prefect server; set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
        ids = deploy_to_pool(cfg, config_path)
        stdout.print(f"deployed {len(ids)} deployments (ingest, retrain) to work pool {pool!r}; run them with "
                     f"`prefect worker start --pool {pool}` where autoscalp is installed")


def register(app: typer.Typer) -> None:
    """Add the commands to the ``autoscalp`` app (flows/cli.py)."""
    app.command("train")(train_command)
    app.command("ui")(ui_command)
    app.command("schedule")(schedule_command)
