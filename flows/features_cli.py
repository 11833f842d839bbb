"""``autoscalp features ...``: the candidate catalog and the feature store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from flows._cli_common import ConfigOption, JsonOption, PrefectOption, _config, stdout, user_errors

features_app = typer.Typer(help="Candidate features, the feature store and the selection.", no_args_is_help=True)


@features_app.command("list")
def list_command(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every candidate feature: family, window, unit, transform, warm-up and what it measures."""
    from pipeline.features.catalog import catalog
    from pipeline.features.selection import fits_budget

    budget = _config(config).features.warmup_budget
    rows = [{**spec.describe(), "fits_warmup_budget": fits_budget(spec, budget)} for spec in catalog().values()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    fitting = sum(r["fits_warmup_budget"] for r in rows)
    table = Table("name", "family", "window", "unit", "transform", "warm-up", "in budget", "description",
                  title=f"{len(rows)} candidate features ({fitting} fit the warm-up budget)")
    for r in rows:
        table.add_row(
            r["name"], r["family"], f"{r['window']:g}", r["unit"], r["transform"], _warmup(r),
            "yes" if r["fits_warmup_budget"] else "no", r["description"],
        )
    stdout.print(table)


def _warmup(described: dict) -> str:
    counts = {what: described[f"warmup_{what}"] for what in ("quotes", "trades", "events", "moves", "depth")}
    parts = [f"{count:,} {what}" for what, count in counts.items() if count]
    if described["warmup_seconds"]:
        parts.append(f"{described['warmup_seconds']:g} s")
    if described["warmup_after_events"]:
        parts.append(f"then {described['warmup_after_events']:,} events")
    if described["warmup_after_depth"]:
        parts.append(f"then {described['warmup_after_depth']:,} depth")
    return " + ".join(parts) or "-"


@features_app.command("build")
def build_command(
    config: ConfigOption = None,
    symbol: Annotated[
        Optional[list[str]], typer.Option("--symbol", "-s", help="ccxt unified symbol; repeatable (default: all).")
    ] = None,
    feature: Annotated[
        Optional[list[str]], typer.Option("--feature", "-f", help="Extract only these candidates; repeatable.")
    ] = None,
    prefect: PrefectOption = True,
    as_json: JsonOption = False,
) -> None:
    """Extract features and triple-barrier labels per symbol and day into the feature store, then
    select the features the models will use. Days already stored with the same inputs are reused."""
    _config(config)
    config_path = str(config) if config else None
    with user_errors():
        if prefect:
            from flows.features import features_flow

            report = features_flow(symbols=list(symbol or []) or None, names=list(feature or []) or None,
                                   config_path=config_path)
        else:
            from flows.features import build_in_process

            report = build_in_process(list(symbol or []) or None, list(feature or []) or None, config_path)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    _print_report(report)


def _print_report(report: dict) -> None:
    table = Table("exchange", "symbol", "date", "rows", "labels -1 / 0 / +1", "fingerprint", "",
                  title=f"feature store {report['store']}")
    for p in report["partitions"]:
        counts = p["label_counts"]
        table.add_row(
            p["exchange"], p["symbol"], p["date"], f"{p['rows']:,}",
            " / ".join(f"{counts.get(c, 0):,}" for c in ("-1", "0", "1")) if counts else "-",
            p["fingerprint"], "reused" if p["reused"] else (f"skipped: {p['skipped']}" if p["skipped"] else "built"),
        )
    stdout.print(table)
    selection = report["selection"]
    params = selection["params"]
    title = (
        f"selected {len(selection['names'])} of {params['candidates']} candidates "
        f"({selection['method']}, {len(params['fold_rows'])} folds, selection {selection['id']})"
    )
    chosen = Table("#", "feature", "mutual information (bits)", "rank per fold", title=title)
    for i, (name, score, ranks) in enumerate(zip(selection["names"], selection["scores"], selection["fold_ranks"]), 1):
        chosen.add_row(str(i), name, f"{score:.4f}", " ".join(f"{r:g}" for r in ranks))
    stdout.print(chosen)


@features_app.command("check")
def check_command(
    config: ConfigOption = None,
    path: Annotated[
        Optional[Path], typer.Option("--path", "-p", help="Check on this market-data file (default: the simulator).")
    ] = None,
    symbol: Annotated[Optional[str], typer.Option("--symbol", "-s", help="Symbol in a multi-symbol file.")] = None,
    feature: Annotated[
        Optional[list[str]], typer.Option("--feature", "-f", help="Check only these features; repeatable.")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A small subset on 20k events (seconds).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random cut and restart points.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Lookahead and warm-up check: recompute every candidate on data truncated at random points
    (a past value that changes leaks the future) and from later starts (a value that still differs
    after its declared warm-up needs a longer one). Exits 1 on any leak, short warm-up or NaN."""
    from pipeline.features.check import run_check

    cfg = _config(config)
    with user_errors():
        report = run_check(cfg, names=list(feature) if feature else None, path=path, symbol=symbol,
                           quick=quick, seed=seed)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        stdout.print(report.summary())
    raise typer.Exit(report.exit_code)
