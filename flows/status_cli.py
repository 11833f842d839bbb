"""``autoscalp status``: champion and challenger with their backtests, the retrain schedule and the
daemon, in one terminal view (flows/status.py gathers them); ``--json`` for scripts."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Annotated, Any, Optional

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from flows._cli_common import ConfigOption, JsonOption, _config, stdout
from flows.status import gather

BACKTEST_COLUMNS = (("net_pnl_usdt", "net PnL USDT", "{:+,.2f}"), ("sharpe", "Sharpe", "{:.2f}"),
                    ("max_drawdown_pct", "max DD %", "{:.2f}"), ("trades", "trades", "{:,.0f}"),
                    ("win_rate", "win rate", "{:.1%}"))  # fmt: skip


def status_command(
    config: ConfigOption = None,
    prefect_api: Annotated[
        Optional[str], typer.Option(help="Prefect API URL (default: $PREFECT_API_URL or the Prefect profile's).")
    ] = None,
    daemon: Annotated[
        Optional[str], typer.Option(help="The daemon's base URL (default: http://serve.host:serve.http_port).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Champion and challenger per symbol with their latest backtests, the last and next scheduled
    retrain, and the daemon's state (kill switch, position, PnL, model version and age, drift).
    A part that cannot be read says why ("unavailable: ...")."""
    cfg = _config(config)
    status = gather(cfg, prefect_api, daemon)
    if as_json:
        print(json.dumps(status, indent=2, default=str))
        return
    now = status["at"]
    stdout.print(Panel(_models_view(status["models"], now), title="models (MLflow registry)", title_align="left"))
    stdout.print(Panel(_schedule_view(status["schedule"], now), title="schedule (Prefect)", title_align="left"))
    stdout.print(Panel(_daemon_view(status["daemon"]), title="daemon", title_align="left"))


def _unavailable(part: dict) -> str | None:
    reason = part.get("unavailable")
    return f"[yellow]unavailable:[/] {reason}" if reason else None


def _models_view(part: dict, now: float):  # noqa: ANN202 (a rich renderable)
    if (text := _unavailable(part)) is not None:
        return text
    table = Table("symbol", "role", "version", "age", "OOS AUC", "µs/tick", "backtest", *(c[1] for c in BACKTEST_COLUMNS),
                  caption=part["tracking_uri"])  # fmt: skip
    for symbol, entry in part["symbols"].items():
        for role in ("champion", "challenger"):
            version = entry.get(role)
            if version is None:
                table.add_row(symbol, role, "[dim]none[/]", *[""] * (4 + len(BACKTEST_COLUMNS)))
                continue
            backtest = version.get("backtest")
            metrics = (backtest or {}).get("metrics", {})
            where = (f"{backtest['run_name']} ({_ago(backtest.get('started_s'), now)})" if backtest
                     else "[dim]none yet[/]")  # fmt: skip
            table.add_row(symbol, role, f"v{version['version']}", _age(version.get("age_s")), _num(version.get("oos_auc"), "{:.3f}"),
                          _num(version.get("serve_tick_us"), "{:.1f}"), where, *(_num(metrics.get(key), fmt) for key, _, fmt in BACKTEST_COLUMNS))  # fmt: skip
    return table


def _schedule_view(part: dict, now: float):  # noqa: ANN202
    if (text := _unavailable(part)) is not None:
        return text
    table = Table("deployment", "schedule", "last run", "running", "next run", caption=part["api"])
    for name, d in part["deployments"].items():
        schedules = ", ".join(d["schedules"]) or "[dim]none[/]"
        table.add_row(name, schedules + (" [yellow](paused)[/]" if d["paused"] else ""), _run_text(d["last_run"], now),
                      _run_text(d["running"], now), _run_text(d["next_run"], now))  # fmt: skip
    return table


def _daemon_view(part: dict):  # noqa: ANN202
    if (text := _unavailable(part)) is not None:
        return text
    health, metrics = part["health"], part["metrics"]
    kill = (health.get("kill_switch") or {})
    state = kill.get("state") or metrics.get("kill_switch") or "?"
    colour = {"active": "green", "reducing": "yellow", "halted": "red"}.get(state, "white")
    summary = Table.grid(padding=(0, 2))
    summary.add_row("url", part["url"])
    summary.add_row("state", f"{health.get('state')} (ticks {health.get('ticks', 0):,}, queue {health.get('queue_depth', 0)}, "
                             f"last tick {_age(health.get('last_tick_age_s'))} ago)")  # fmt: skip
    summary.add_row("kill switch", f"[{colour}]{state}[/]" + (f": {kill['reason']}" if kill.get("reason") else ""))
    summary.add_row("equity", f"{_num(metrics.get('equity_usdt'), '{:,.2f}')} USDT, PnL "
                              f"{_num(metrics.get('pnl_usdt'), '{:+,.2f}')} USDT, drawdown "
                              f"{_num(metrics.get('drawdown_ratio'), '{:.2%}')}")  # fmt: skip
    feeds = ", ".join(f"{k} {v}" for k, v in (health.get("feeds") or {}).items())
    summary.add_row("feeds", feeds or "-")
    symbols = Table("symbol", "position", "leverage", "model", "model age", "alert", "max PSI", "hit rate")
    for symbol, m in metrics.get("symbols", {}).items():
        model = (health.get("models") or {}).get(symbol, {})
        version = m.get("model_version")
        symbols.add_row(symbol, _num(m.get("position_qty"), "{:g}"), _num(m.get("leverage"), "{:.2f}x"),
                        model.get("model") or (f"v{version:.0f}" if version is not None else "no model"),
                        _age(m.get("model_age_s")), model.get("alert") or ("yes" if m.get("model_alert") else "-"),
                        _num(m.get("drift_psi_max"), "{:.3f}"), _num(m.get("hit_rate"), "{:.1%}"))  # fmt: skip
    return Group(summary, symbols)


def _run_text(run: dict | None, now: float) -> str:
    if not run:
        return "[dim]-[/]"
    when = _parse_time(run.get("at"))
    return f"{run.get('state')} {_ago(when, now) if when is not None else ''}".strip()


def _parse_time(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _ago(ts_s: float | None, now: float) -> str:
    if ts_s is None:
        return "-"
    stamp = datetime.fromtimestamp(ts_s, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    delta = now - ts_s
    return f"{stamp}, {_age(delta)} ago" if delta >= 0 else f"{stamp}, in {_age(-delta)}"


def _age(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else fmt.format(value)


def register(app: typer.Typer) -> None:
    app.command("status")(status_command)

