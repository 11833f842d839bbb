"""The ``autoscalp`` command line.

Every command takes ``--config PATH`` (default: $AUTOSCALP_CONFIG, else the embedded defaults,
which conf/base.yaml spells out). Bad input ends with one line on stderr naming the problem and
exit code 2; the store is left as it was.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from flows._cli_common import ConfigOption, JsonOption, PrefectOption, _config, stdout, user_errors
from flows._env import console_logging
from flows.features_cli import features_app
from flows.backtest_cli import register as register_backtest_commands
from flows.config_reference import register as register_config_commands
from flows.doctor import register as register_doctor_command
from flows.serve_cli import register as register_serve_command
from flows.status_cli import register as register_status_command
from flows.train_cli import register as register_train_commands
from flows.up import register as register_up_commands
from pipeline.config import AppConfig
from pipeline.home import autoscalp_home

app = typer.Typer(
    help="autoscalp: ML scalping of crypto perpetual futures (ingest, train, promote, serve).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect the tick store.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
register_train_commands(app)  # train, ui, schedule (flows/train_cli.py)
register_backtest_commands(app)  # backtest, promote, rollback, tune-strategy (flows/backtest_cli.py)
register_serve_command(app)  # serve (flows/serve_cli.py)
register_status_command(app)  # status (flows/status_cli.py)
register_doctor_command(app)  # doctor (flows/doctor.py)
register_config_commands(app)  # config reference, config show (flows/config_reference.py)
register_up_commands(app)  # up, down (flows/up.py)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False) -> None:
    console_logging(verbose)


@app.command("ingest")
def ingest_command(
    config: ConfigOption = None,
    source: Annotated[
        Optional[str], typer.Option(help="synthetic | files | exchange (default: sources.default in the config).")
    ] = None,
    path: Annotated[
        Optional[list[Path]], typer.Option("--path", "-p", help="File or directory to import (source files); repeatable.")
    ] = None,
    symbol: Annotated[
        Optional[list[str]], typer.Option("--symbol", "-s", help="ccxt unified symbol, e.g. BTC/USDT:USDT; repeatable.")
    ] = None,
    exchange: Annotated[
        Optional[str], typer.Option(help="ccxt exchange id, for sources or files that do not name it.")
    ] = None,
    prefect: PrefectOption = True,
    as_json: JsonOption = False,
) -> None:
    """Ingest ticks into the parquet store under $AUTOSCALP_HOME.

    Bad rows (NaN or non-positive prices, crossed books, non-market trades, timestamps going
    backwards) are quarantined with a reason; re-ingesting the same data adds nothing.
    """
    cfg = _config(config)
    paths = [str(p) for p in path or []]
    with user_errors():
        if prefect:
            from flows.ingest import ingest_flow

            reports = ingest_flow(
                source=source, paths=paths, symbols=list(symbol or []), exchange=exchange,
                config_path=str(config) if config else None,
            )
        else:
            reports = _ingest_in_process(cfg, source, paths, symbol or [], exchange)
    if as_json:
        print(json.dumps(reports, indent=2))
        return
    for report in reports:
        table = Table("exchange", "symbol", "kind", "parsed", "added", "already stored", "quarantined",
                      title=f"ingested {report['source']}")
        for s in report["streams"]:
            table.add_row(
                s["exchange"], s["symbol"], s["kind"],
                f"{s['parsed']:,}", f"{s['added']:,}", f"{s['duplicates']:,}", f"{s['quarantined']:,}",
            )
        stdout.print(table)


def _ingest_in_process(
    cfg: AppConfig, source: str | None, paths: list[str], symbols: list[str], exchange: str | None
) -> list[dict]:
    from pipeline.data.ingest import ingest
    from pipeline.data.sources import build_source, plan_sources
    from pipeline.data.store import TickStore

    store = TickStore(cfg.data.store_dir or autoscalp_home().store)
    specs = plan_sources(cfg, source, tuple(paths), tuple(symbols), exchange)
    return [ingest(build_source(spec, cfg), store, cfg.quality).to_dict() for spec in specs]


@data_app.command("info")
def data_info_command(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Rows, time span, symbols, gaps and quarantined rows per partition of the store."""
    from pipeline.data.info import summarise
    from pipeline.data.store import TickStore

    cfg = _config(config)
    store_dir = Path(cfg.data.store_dir or autoscalp_home().store)
    summaries = summarise(TickStore(store_dir), cfg.quality.gap_threshold_s)
    if as_json:
        print(json.dumps({"store": str(store_dir), "partitions": [s.to_dict() for s in summaries]}, indent=2))
        return
    if not summaries:
        stdout.print(f"The store at {store_dir} is empty: run `autoscalp ingest` first.")
        return
    table = Table(
        "exchange", "symbol", "kind", "date", "rows", "from (UTC)", "to (UTC)",
        f"gaps > {cfg.quality.gap_threshold_s:g}s", "max gap s", "missing ids", "quarantined",
        title=f"tick store {store_dir}",
    )
    for s in summaries:
        table.add_row(
            s.exchange, s.symbol, s.kind, s.date, f"{s.rows:,}", _utc(s.first_ns), _utc(s.last_ns),
            str(s.gaps), f"{s.max_gap_s:.3f}", "-" if s.missing_trade_ids is None else str(s.missing_trade_ids),
            str(s.quarantined),
        )
    stdout.print(table)


def _utc(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def main() -> None:
    app()
