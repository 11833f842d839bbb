"""``autoscalp backtest``, ``autoscalp promote``, ``autoscalp rollback`` and ``autoscalp tune-strategy``."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from flows._cli_common import ConfigOption, JsonOption, _config, stdout, user_errors
from serving.backtest.data import parse_time

SymbolOption = Annotated[Optional[str], typer.Option("--symbol", "-s", help="ccxt unified symbol (default: the first configured).")]
ExchangeOption = Annotated[Optional[str], typer.Option("--exchange", help="Exchange id in the store (default: the only one holding the symbol).")]


def configs_for(config_path: Path | None):  # noqa: ANN201 (serving.backtest.evaluation.Configs)
    from serving.backtest.evaluation import Configs

    cfg = _config(config_path)
    return cfg, Configs(cfg.engine, cfg.venue, cfg.backtest, cfg.promotion, cfg.training.tracking,
                        cfg.features.sampling.stride)  # fmt: skip


def _store(cfg):  # noqa: ANN001, ANN202
    from pipeline.data.store import TickStore
    from pipeline.home import autoscalp_home

    return TickStore(cfg.data.store_dir or autoscalp_home().store)


def _symbol(cfg, symbol: str | None) -> str:  # noqa: ANN001
    return symbol or cfg.symbols[0]


def backtest_command(
    config: ConfigOption = None,
    symbol: SymbolOption = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="champion, challenger, latest, a version number or a models:/ URI; omit for the no-model strategies.")] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="Window start (ISO-8601 or ns; default: after the model's fit, else the first stored tick).")] = None,
    end: Annotated[Optional[str], typer.Option("--to", help="Window end, exclusive (default: after the last stored tick).")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the HTML report here.")] = None,
    exchange: ExchangeOption = None,
    log_mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the run, summary and report to MLflow.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Replay stored ticks through the features, the ensemble, the engine and the simulated venue;
    print the summary with the baselines on the same window (no-model strategies, flat)."""
    from rich.progress import Progress

    from serving.backtest.evaluation import backtest_version, log_backtest, write_backtest_report

    cfg, configs = configs_for(config)
    with user_errors():
        sym = _symbol(cfg, symbol)
        with Progress(transient=True, console=stdout, disable=as_json or not stdout.is_terminal) as bar:
            task = bar.add_task(f"backtest {sym}", total=None)
            result, data = backtest_version(_store(cfg), sym, model, parse_time(start), parse_time(end), configs,
                                            exchange, progress=lambda done, total: bar.update(task, completed=done,
                                                                                              total=total))  # fmt: skip
        title = f"autoscalp backtest {sym} {model or 'no-model'}"
        if report is not None:
            write_backtest_report(result, report, title)
        run_id = log_backtest(result, f"backtest {sym} {model or 'no-model'}", configs) if log_mlflow else None
    out = result.to_json() | {"mlflow_run_id": run_id, "report": str(report) if report else None}
    if as_json:
        print(json.dumps(out, indent=2, default=str))
        return
    print_backtest(out)


def print_backtest(out: dict) -> None:
    rows = {"model": out["summary"], **out["baselines"]}
    keys = ("net_pnl_usdt", "return_pct", "sharpe", "max_drawdown_pct", "trades", "win_rate", "profit_factor",
            "fees_paid_usdt", "funding_net_usdt", "liquidations")  # fmt: skip
    p = out["provenance"]
    window = f"{_iso(p['start_ns'])} -> {_iso(p['end_ns'])}"
    model = f"v{p['model']['version']}" if p["model"].get("version") else "no model"
    table = Table("run", *keys, title=f"{p['symbol']} {model}: {p['events']:,} events, {window}")
    for name, s in rows.items():
        table.add_row(name, *(_fmt(s.get(k)) for k in keys))
    stdout.print(table)
    stdout.print(f"trade-list hash {p['trade_list_hash']}; data {p['data_fingerprint'][:16]}; config "
                 f"{p['config_hash'][:16]}; code {p['code_version']}; {out['seconds']['total_s']:.1f} s")
    if out.get("report"):
        stdout.print(f"report: {out['report']}")
    if out.get("mlflow_run_id"):
        stdout.print(f"MLflow run {out['mlflow_run_id']}")


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _fmt(value) -> str:  # noqa: ANN001
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def promote_command(
    config: ConfigOption = None,
    symbol: SymbolOption = None,
    exchange: ExchangeOption = None,
    force: Annotated[bool, typer.Option("--force", help="Promote even if the gate fails (logged as forced).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Backtest challenger and champion on the same unseen recent window; promote the challenger to
    champion if it passes the gate (config `promotion`)."""
    from serving.backtest.evaluation import evaluate_and_promote

    cfg, configs = configs_for(config)
    with user_errors():
        decision = evaluate_and_promote(_store(cfg), _symbol(cfg, symbol), configs, force, exchange)
    if as_json:
        print(json.dumps(decision.to_json(), indent=2, default=str))
        return
    verdict = "[green]promoted to champion" if decision.promote else "[yellow]not promoted (stays challenger)"
    stdout.print(f"{verdict}[/] against {decision.reference}:")
    for reason in decision.reasons:
        stdout.print(f"  - {reason}")


def rollback_command(config: ConfigOption = None, symbol: SymbolOption = None, as_json: JsonOption = False) -> None:
    """Move `champion` back to `previous-champion`."""
    from pipeline.training import aliases, tracking
    from pipeline.training.registry import model_name

    cfg = _config(config)
    with user_errors():
        tracking.connect(cfg.training.tracking)
        name = model_name(_symbol(cfg, symbol))
        was, now = aliases.rollback(name)
    if as_json:
        print(json.dumps({"name": name, "from": was, "to": now}))
        return
    stdout.print(f"{name}: champion rolled back from version {was} to {now}")


def tune_strategy_command(
    config: ConfigOption = None,
    symbol: SymbolOption = None,
    model: Annotated[str, typer.Option("--model", "-m", help="champion, challenger, latest, a version number or a models:/ URI.")] = "champion",
    start: Annotated[Optional[str], typer.Option("--from", help="Range start (ISO-8601 or ns; default: the end of the version's fit).")] = None,
    end: Annotated[Optional[str], typer.Option("--to", help="Range end, exclusive (default: after the last stored tick).")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=2, help="Trials of the study (default: strategy_tuning.trials).")] = None,
    exchange: ExchangeOption = None,
    log_mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the run; tag the version with adopted parameters.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Tune the strategy and risk parameters a version trades with (Optuna on walk-forward windows of
    the range); adopt them, as a tag of the version, only if they beat the current ones on the latest
    window, held back from the study (config `strategy_tuning`)."""
    import optuna
    from rich.progress import Progress

    from serving.backtest.evaluation import log_strategy_tuning, tune_version

    cfg, configs = configs_for(config)
    tuning = cfg.strategy_tuning if trials is None else cfg.strategy_tuning.model_copy(update={"trials": trials})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with user_errors():
        sym = _symbol(cfg, symbol)
        with Progress(transient=True, console=stdout, disable=as_json or not stdout.is_terminal) as bar:
            task = bar.add_task(f"tune {sym} {model}", total=tuning.trials)
            result, info = tune_version(_store(cfg), sym, model, parse_time(start), parse_time(end), configs, tuning,
                                        exchange, progress=lambda n: bar.update(task, completed=n))  # fmt: skip
        run_id = log_strategy_tuning(result, sym, info, configs.tracking) if log_mlflow else None
    out = result.to_json() | {"model": {"name": info.name, "version": info.version}, "mlflow_run_id": run_id,
                              "tagged": bool(run_id and result.adopted)}  # fmt: skip
    if as_json:
        print(json.dumps(out, indent=2, default=str))
        return
    print_strategy_tuning(out)


def print_strategy_tuning(out: dict) -> None:
    held = out["held_back_summaries"]
    keys = ("net_pnl_usdt", "sharpe", "max_drawdown_pct", "trades", "liquidations")  # the objective is one of them
    table = Table("parameters", f"in-window {out['objective']} ({len(out['windows'])} windows)",
                  *(f"held-back {k}" for k in keys),
                  title=f"{out['provenance']['symbol']} {out['model']['name']} v{out['model']['version']}")  # fmt: skip
    for name in ("tuned", "incumbent"):
        table.add_row(name, _fmt(out["in_window"][name]), *(_fmt(held[name].get(k)) for k in keys))
    stdout.print(table)
    params = Table("parameter", "incumbent", "tuned")
    for path, value in out["params"].items():
        params.add_row(path, _fmt(out["incumbent"][path]), _fmt(value))
    stdout.print(params)
    trials, dsr = out["trials"], out["deflated_sharpe"]
    stdout.print(f"{trials['run']} trials ({trials['feasible']} feasible), best #{out['best_trial']}; deflated Sharpe "
                 f"ratio of the best {_fmt(dsr)} (diagnostic; the gate is the held-back window); "
                 f"{out['seconds']['per_trial_s']:.2f} s/trial, {out['seconds']['total_s']:.1f} s")  # fmt: skip
    if out["adopted"]:
        where = (f"tag autoscalp.strategy_params set on v{out['model']['version']}" if out["tagged"]
                 else "not tagged (--no-mlflow)")  # fmt: skip
        stdout.print(f"[green]adopted[/]: {out['reason']}; {where}")
    else:
        stdout.print(f"[yellow]not adopted[/]: {out['reason']}")
    if out.get("mlflow_run_id"):
        stdout.print(f"MLflow run {out['mlflow_run_id']}")


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest_command)
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)
    app.command("tune-strategy")(tune_strategy_command)
