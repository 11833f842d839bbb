"""The backtest report: one self-contained HTML page (tables, and plots as base64 PNG; no external
JS or CSS) from a ledger and its ``summarise`` dict.

Plots are drawn on matplotlib's Agg canvas through ``Figure`` directly, not pyplot, so rendering
touches no global backend state and is safe beside a daemon's threads. Long lines are thinned to
at most ``MAX_POINTS`` points, keeping each bucket's low and high, so a drawdown or a spike survives
the thinning; fill markers are thinned to ``MAX_MARKERS`` per kind, liquidations never.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from serving.metrics import NS_PER_HOUR, Ledger, compare, drawdown

TITLE = "autoscalp backtest"
MAX_POINTS = 5_000
MAX_MARKERS = 2_000
_COUNTS = {"trades", "wins", "fills", "liquidations", "return_periods"}
_SKIP_IN_HEADLINE = {"start_ns", "end_ns", "trade_list_hash", "by_strategy", "by_regime"}  # shown apart
_TRADE_COLUMNS = ["trades", "win_rate", "net_usdt", "gross_pnl_usdt", "fees_usdt", "funding_usdt",
                  "avg_trade_usdt", "profit_factor", "avg_hold_s"]  # fmt: skip
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:0.2em 0.6em;text-align:right}
th:first-child,td:first-child{text-align:left}
img{max-width:100%}
.muted{color:#777}"""


def render_html(summary: dict, ledger: Ledger, baselines: dict[str, dict] | None = None, title: str = TITLE,
                provenance: dict | None = None) -> str:  # fmt: skip
    """The report page. ``baselines``: other runs' summaries on the same window (e.g. "flat",
    "no-model"); ``provenance``: whatever identifies the run (model uri and version, data
    fingerprint, config hash, code version), rendered as given; the trade-list hash is added from
    the summary unless given."""
    provenance = {**(provenance or {})}
    provenance.setdefault("trade_list_hash", summary.get("trade_list_hash"))
    runs = {"this run": summary, **(baselines or {})}
    parts = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{_e(_window(ledger))}</p>",
        "<h2>Headline</h2>",
        _table(["metric", "value"],
               [[k, _fmt(k, v)] for k, v in summary.items() if k not in _SKIP_IN_HEADLINE]),
        "<h2>Compared with baselines</h2>",
        _compare_table(compare(runs)) if baselines else '<p class="muted">no baselines given</p>',
        "<h2>Equity and drawdown</h2>",
        _img(equity_png(ledger), "equity and drawdown"),
        "<h2>Trades over price</h2>",
        _img(trades_png(ledger), "trades over price"),
        "<h2>By regime (regime at open)</h2>",
        _img(regime_png(summary), "net PnL by regime"),
        _stats_table("regime", summary.get("by_regime", {}), [*_TRADE_COLUMNS, "time_pct"]),
        "<h2>By strategy (strategy of the opening fill)</h2>",
        _stats_table("strategy", summary.get("by_strategy", {}), _TRADE_COLUMNS),
        "<h2>Leverage</h2>",
        _img(leverage_png(ledger), "leverage over time"),
        "<h2>Provenance</h2>",
        _table(["item", "value"], [[k, _provenance_value(v)] for k, v in provenance.items()]),
    ]  # fmt: skip
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_e(title)}</title>\n'
            f"<style>\n{_CSS}\n</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")  # fmt: skip


def write_report(path: str | Path, summary: dict, ledger: Ledger, baselines: dict[str, dict] | None = None,
                 title: str = TITLE, provenance: dict | None = None) -> Path:  # fmt: skip
    """Render, then write atomically (a temporary file beside ``path``, then ``os.replace``): a
    failure leaves any previous report as it was and no partial file."""
    page = render_html(summary, ledger, baselines, title, provenance)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


# ---- plots ------------------------------------------------------------------------------------------


def downsample(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``values``: each bucket's lowest and highest,
    and the first and last points."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, (max_points - 2) // 2)
    size = math.ceil(n / buckets)
    padded = np.pad(np.asarray(values, dtype=np.float64), (0, buckets * size - n), mode="edge").reshape(buckets, size)
    offsets = np.arange(buckets) * size
    lows, highs = offsets + np.nanargmin(padded, axis=1), offsets + np.nanargmax(padded, axis=1)
    picked = np.concatenate([[0, n - 1], lows, highs])
    return np.unique(np.minimum(picked, n - 1))


def equity_png(ledger: Ledger) -> bytes:
    fig, (top, bottom) = _figure(2, height=5.0, ratios=(2, 1))
    equity = ledger.equity.sort_values("ts_ns", kind="stable") if len(ledger.equity) else ledger.equity
    if len(equity) == 0:
        return _empty(fig, top, "no equity samples")
    values = equity["equity_usdt"].to_numpy(np.float64)
    below_usdt, below_frac = drawdown(values, ledger.initial_equity_usdt)
    keep = np.union1d(downsample(values, MAX_POINTS // 2), downsample(-below_frac, MAX_POINTS // 2))
    when = _times(equity["ts_ns"].to_numpy(np.int64)[keep])
    top.plot(when, values[keep], color="tab:blue", linewidth=1)
    top.axhline(ledger.initial_equity_usdt, color="grey", linestyle=":", linewidth=1)
    top.set(ylabel="equity (USDT)", title="equity (wallet + unrealised at mid)")
    bottom.fill_between(when, -below_frac[keep] * 100.0, 0.0, color="tab:red", alpha=0.4, step="post")
    bottom.set(ylabel="drawdown (%)")
    return _png(fig)


def trades_png(ledger: Ledger) -> bytes:
    fig, (ax,) = _figure(1, height=4.0)
    fills, equity = ledger.fills, ledger.equity
    symbol = str(fills["symbol"].value_counts().index[0]) if len(fills) else ""
    if len(equity):
        equity = equity.sort_values("ts_ns", kind="stable")
        mid = equity["mid"].to_numpy(np.float64)
        keep = downsample(mid)
        ax.plot(_times(equity["ts_ns"].to_numpy(np.int64)[keep]), mid[keep], color="grey", linewidth=0.8, label="mid")
    if len(fills):
        fills = fills[fills["symbol"] == symbol]
        liquidation = (fills["liquidity"] == "liquidation").to_numpy()
        kinds = [("buy", (fills["side"] > 0).to_numpy() & ~liquidation, "^", "tab:green"),
                 ("sell", (fills["side"] < 0).to_numpy() & ~liquidation, "v", "tab:red"),
                 ("liquidation", liquidation, "X", "black")]  # fmt: skip
        for name, mask, marker, colour in kinds:
            rows = np.flatnonzero(mask)
            if name != "liquidation" and len(rows) > MAX_MARKERS:
                rows = rows[:: math.ceil(len(rows) / MAX_MARKERS)]
                name = f"{name} (1 in {math.ceil(mask.sum() / len(rows))} shown)"
            if len(rows):
                ax.scatter(_times(fills["ts_ns"].to_numpy(np.int64)[rows]), fills["price"].to_numpy()[rows],
                           marker=marker, color=colour, s=40 if marker == "X" else 14, label=name,
                           zorder=3)  # fmt: skip
    if not len(equity) and not len(fills):
        return _empty(fig, ax, "no prices and no fills")
    others = ledger.fills["symbol"].nunique() - 1 if len(ledger.fills) else 0
    ax.set(ylabel="price", title=(f"{symbol}: mid and fills" if symbol else "mid (no fills)")
           + (f" ({others} other symbol(s) not shown)" if others > 0 else ""))  # fmt: skip
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def regime_png(summary: dict) -> bytes:
    fig, (ax,) = _figure(1, height=3.0, width=6.0, dates=False)
    regimes = summary.get("by_regime", {})
    if not regimes:
        return _empty(fig, ax, "no regimes")
    names = list(regimes)
    net = [regimes[r].get("net_usdt") or 0.0 for r in names]
    ax.bar(names, net, color=["tab:green" if v > 0 else "tab:red" for v in net])
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set(ylabel="net PnL (USDT)", title="round trips' net PnL by regime at open")
    return _png(fig)


def leverage_png(ledger: Ledger) -> bytes:
    fig, (ax,) = _figure(1, height=3.0)
    if len(ledger.equity) == 0:
        return _empty(fig, ax, "no equity samples")
    equity = ledger.equity.sort_values("ts_ns", kind="stable")
    ts = equity["ts_ns"].to_numpy(np.int64)
    setting = equity["leverage"].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        used = equity["notional_usdt"].to_numpy(np.float64) / equity["equity_usdt"].to_numpy(np.float64)
    used = np.where(np.isfinite(used), used, np.nan)
    keep = np.union1d(downsample(setting, MAX_POINTS // 2), downsample(np.nan_to_num(used), MAX_POINTS // 2))
    ax.step(_times(ts[keep]), setting[keep], where="post", color="tab:purple", linewidth=1, label="engine leverage")
    ax.plot(_times(ts[keep]), used[keep], color="tab:orange", linewidth=0.8, label="notional / equity")
    ax.set(ylabel="x", title="leverage in force and used")
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def _figure(rows: int, height: float, width: float = 10.0, ratios: tuple[float, ...] | None = None,
            dates: bool = True):  # fmt: skip
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": ratios} if ratios else None)
    for ax in axes[:, 0]:
        if dates:
            locator = AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.grid(True, alpha=0.3)
    return fig, list(axes[:, 0])


def _empty(fig, ax, text: str) -> bytes:
    for each in fig.axes:
        each.set_axis_off()  # and with them the date ticks, which have no dates to show
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    return _png(fig)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def _times(ts_ns: np.ndarray) -> np.ndarray:
    return np.asarray(ts_ns, dtype=np.int64).astype("datetime64[ns]")


# ---- HTML -----------------------------------------------------------------------------------------


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Cells are plain text, escaped here."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _compare_table(table: pd.DataFrame) -> str:
    rows = [[k, *(_fmt(k, v) for v in row)] for k, row in zip(table.index, table.to_numpy(), strict=True)]
    return _table(["metric", *map(str, table.columns)], rows)


def _stats_table(name: str, groups: dict[str, dict], columns: list[str]) -> str:
    if not groups:
        return '<p class="muted">no round trips</p>'
    return _table([name, *columns], [[g, *(_fmt(c, stats.get(c)) for c in columns)] for g, stats in groups.items()])


def _provenance_value(value) -> str:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return "n/a" if value is None else str(value)


def _fmt(key: str, value) -> str:
    """A metric as text, by its name's unit: USDT to cents, percentages, counts, times."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if key in _COUNTS or isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if key.endswith("_usdt"):  # cents, but a scalper's per-trade figures can be below a cent
        return f"{value:,.2f}" if abs(value) >= 1.0 or value == 0.0 else f"{value:.4g}"
    if key.endswith("_pct"):
        return f"{value:,.2f}%"
    return f"{value:,.0f}" if abs(value) >= 1_000 else f"{value:.4g}"


def _window(ledger: Ledger) -> str:
    start, end = (pd.Timestamp(ns, unit="ns") for ns in (ledger.start_ns, ledger.end_ns))
    hours = (ledger.end_ns - ledger.start_ns) / NS_PER_HOUR
    return f"window {start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} UTC ({hours:,.2f} h, event time)"
