"""What ``autoscalp serve`` shows while it runs: in a terminal a rich panel redrawn every second; on
a pipe or in a log file one plain line every 5 s; nothing with ``--json`` (stdout is the summary).

Everything shown is read from what the daemon already keeps for /health and /metrics (its
``Telemetry``, the champion watcher's status, the feed's counters, the engine's kill switch and
warm-up hold) and from the journal's notes through a read-only connection of its own (SQLite WAL:
reading never blocks the trading thread's writes). The trading loop keeps no state for the view.

``snapshot`` gathers one flat dict; ``render`` (the panel) and ``plain_line`` are pure functions
of it, so they are tested on a dict.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

LIVE_EVERY_S = 1.0
LINE_EVERY_S = 5.0
NOTE_KINDS = ("restart", "reconcile", "model", "strategy", "control", "feed", "liquidation", "stop")
NOTES_SHOWN = 6
_KILL_STYLE = {"active": "green", "reducing": "yellow", "halted": "bold red"}


def view_mode(as_json: bool, is_terminal: bool) -> Literal["live", "lines", "none"]:
    """The panel in a terminal, plain lines elsewhere, nothing when stdout carries JSON."""
    if as_json:
        return "none"
    return "live" if is_terminal else "lines"


class JournalNotes:
    """The journal's latest notes, read through a read-only connection opened on first use."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    def latest(self, n: int = NOTES_SHOWN, kinds: tuple[str, ...] = NOTE_KINDS) -> list[tuple[int, str, str]]:
        """(ts_ns, kind, text), oldest first; [] while the journal cannot be read."""
        try:
            if self._db is None:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1.0,
                                           check_same_thread=False)  # fmt: skip
            rows = self._db.execute(
                f"SELECT ts_ns, kind, text FROM events WHERE kind IN ({', '.join('?' * len(kinds))}) "
                "ORDER BY id DESC LIMIT ?", (*kinds, n),
            ).fetchall()  # fmt: skip
        except sqlite3.Error:
            return []
        return list(reversed(rows))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def snapshot(daemon: Any, notes: JournalNotes | None = None) -> dict[str, Any]:
    """One flat reading of the daemon's health for ``render`` and ``plain_line``."""
    t, symbol = daemon.telemetry, daemon.symbol
    health = t.health()
    model = daemon.watcher.status()
    feed = daemon.feed.stats()
    engine = daemon.engine
    drift = health.get("drift_max_psi")
    if drift is None and symbol in getattr(t, "drift", {}):
        values = [v for v in t.drift[symbol].psi().values() if v == v]
        drift = max(values) if values else None
    return {
        "symbol": symbol,
        "state": health.get("state"),
        "feed": health.get("feeds", {}).get(symbol, "-"),
        "feed_stats": feed,
        "queue_depth": health.get("queue_depth", 0),
        "ticks": t.ticks,
        "trades": t.trades,
        "events": daemon.stats.events,
        "wall_s": time.monotonic(),
        "latency_p50_us": t.latency_quantile_us(0.5),
        "latency_p99_us": t.latency_quantile_us(0.99),
        "position_qty": t.position_qty.get(symbol, 0.0),
        "leverage": t.leverage.get(symbol, 0.0),
        "equity_usdt": t.equity_usdt,
        "pnl_usdt": t.pnl_usdt,
        "drawdown": t.drawdown,
        "kill_state": health.get("kill_switch", {}).get("state", "-"),
        "kill_reason": health.get("kill_switch", {}).get("reason", ""),
        "paused": engine.paused if engine is not None else "",
        "warming": engine.warming if engine is not None else "",
        "model": model.get("model", "no model"),
        "model_age_s": model.get("age_s"),
        "model_alert": model.get("alert"),
        "model_warming": model.get("warming"),
        "hit_rate": t.hit[symbol].rate if symbol in t.hit else math.nan,
        "drift_max_psi": drift,
        "notes": notes.latest() if notes is not None else [],
    }


def with_rates(snap: dict[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """``snap`` with ``ticks_per_s`` (quotes and trades) since ``previous``; NaN for the first."""
    rate = math.nan
    if previous is not None and snap["wall_s"] > previous["wall_s"]:
        done = snap["ticks"] + snap["trades"] - previous["ticks"] - previous["trades"]
        rate = done / (snap["wall_s"] - previous["wall_s"])
    return {**snap, "ticks_per_s": rate}


# ---- formatting ------------------------------------------------------------------------------------


def _num(value: Any, spec: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:{spec}}{unit}"


def _age(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _clock(ts_ns: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts_ns / 1e9)) if ts_ns else "--:--:--"


def _kill(snap: Mapping[str, Any]) -> str:
    reason = snap.get("kill_reason") or ""
    return f"{snap.get('kill_state', '-')}{f' ({reason})' if reason else ''}"


def _hold(snap: Mapping[str, Any]) -> str:
    """Why the engine opens nothing new although the kill switch allows it ('' when it may)."""
    parts = [f"paused: {snap['paused']}" if snap.get("paused") else "", snap.get("warming") or ""]
    return "; ".join(p for p in parts if p)


def plain_line(snap: Mapping[str, Any]) -> str:
    """One line for logs and pipes."""
    hold = _hold(snap)
    alert = snap.get("model_alert")
    parts = [
        time.strftime("%H:%M:%S"), str(snap.get("state")), f"feed {snap.get('feed')}",
        f"ticks {snap.get('ticks', 0):,} ({_num(snap.get('ticks_per_s'), ',.0f')}/s)",
        f"queue {snap.get('queue_depth', 0)}",
        f"p50/p99 {_num(snap.get('latency_p50_us'), '.0f')}/{_num(snap.get('latency_p99_us'), '.0f')} us",
        f"pos {_num(snap.get('position_qty'), '+g')}", f"lev {_num(snap.get('leverage'), '.2f', 'x')}",
        f"pnl {_num(snap.get('pnl_usdt'), '+.2f')}", f"dd {_num(snap.get('drawdown'), '.2%')}",
        f"kill {_kill(snap)}", f"[{hold}]" if hold else "", f"model {snap.get('model')}",
        f"ALERT {alert}" if alert else "",
    ]  # fmt: skip
    return " ".join(p for p in parts if p)


def render(snap: Mapping[str, Any]) -> Panel:
    """The terminal panel."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    stats = snap.get("feed_stats") or {}
    feed_counts = ", ".join(f"{k} {stats[k]:,}" for k in ("conflated", "dropped", "reconnects", "gaps")
                            if stats.get(k))  # fmt: skip
    grid.add_row("feed", f"{snap.get('feed')}{f' ({feed_counts})' if feed_counts else ''}",
                 "ticks", f"{snap.get('ticks', 0):,} quotes, {snap.get('trades', 0):,} trades "
                 f"({_num(snap.get('ticks_per_s'), ',.0f')}/s)")  # fmt: skip
    grid.add_row("queue", f"{snap.get('queue_depth', 0):,}", "tick-to-decision",
                 f"p50 {_num(snap.get('latency_p50_us'), '.1f')}, p99 {_num(snap.get('latency_p99_us'), '.1f')} us")
    grid.add_row("position", _num(snap.get("position_qty"), "+g"), "leverage", _num(snap.get("leverage"), ".2f", "x"))
    pnl = snap.get("pnl_usdt")
    pnl_text = Text(_num(pnl, "+,.2f", " USDT"), style="green" if (pnl or 0) > 0 else "red" if (pnl or 0) < 0 else "")
    grid.add_row("PnL", pnl_text, "equity", _num(snap.get("equity_usdt"), ",.2f", " USDT"))
    grid.add_row("drawdown", _num(snap.get("drawdown"), ".2%"), "hit rate", _num(snap.get("hit_rate"), ".1%"))
    kill = Text(_kill(snap), style=_KILL_STYLE.get(str(snap.get("kill_state")), ""))
    hold = _hold(snap)
    grid.add_row("kill switch", kill, "holding", Text(hold, style="yellow") if hold else "-")
    model = Text(str(snap.get("model")))
    if snap.get("model_warming"):
        model.append(f"  (loading v{snap['model_warming']})", style="dim")
    grid.add_row("model", model, "age", _age(snap.get("model_age_s")))
    drift = snap.get("drift_max_psi")
    # PSI's usual reading: under 0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a large one
    drift_style = "" if drift is None or not drift >= 0.1 else "yellow" if drift < 0.25 else "red"
    grid.add_row("drift (max PSI)", Text(_num(drift, ".3f"), style=drift_style), "alert",
                 Text(str(snap["model_alert"]), style="red") if snap.get("model_alert") else "-")  # fmt: skip
    notes = Table(show_header=False, box=None, padding=(0, 1))
    notes.add_column(style="dim", no_wrap=True, min_width=8)
    notes.add_column(style="cyan", no_wrap=True, min_width=6)
    notes.add_column(overflow="ellipsis", no_wrap=True)
    for ts_ns, kind, text in snap.get("notes") or ():
        notes.add_row(_clock(ts_ns), kind, text.splitlines()[0] if text else "")
    body = Group(grid, Text("journal", style="bold"), notes) if snap.get("notes") else grid
    state = str(snap.get("state"))
    title = f"autoscalp serve · {snap.get('symbol')} · [{'green' if state == 'running' else 'yellow'}]{state}[/]"
    return Panel(body, title=title, title_align="left", subtitle=time.strftime("%H:%M:%S"), subtitle_align="right")


# ---- the thread --------------------------------------------------------------------------------------


class StatusView:
    """Shows ``source()`` on ``console`` until ``done()`` (mode from ``view_mode``): the panel every
    ``LIVE_EVERY_S``, or a plain line every ``LINE_EVERY_S``."""

    def __init__(self, source: Callable[[], dict[str, Any]], console: Console, mode: str,
                 done: Callable[[], bool], every_s: float | None = None) -> None:  # fmt: skip
        self.source, self.console, self.mode, self.done = source, console, mode, done
        self.every_s = every_s if every_s is not None else LIVE_EVERY_S if mode == "live" else LINE_EVERY_S
        self._previous: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None

    def read(self) -> dict[str, Any]:
        snap = with_rates(self.source(), self._previous)
        self._previous = snap
        return snap

    def start(self) -> StatusView:
        if self.mode != "none":
            self._thread = threading.Thread(target=self.run, name="serve-status", daemon=True)
            self._thread.start()
        return self

    def join(self, timeout_s: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run(self) -> None:
        if self.mode == "live":
            from rich.live import Live

            with Live(render(self.read()), console=self.console, refresh_per_second=4) as live:
                while not self._wait():
                    live.update(render(self.read()))
                live.update(render(self.read()))  # the last state stays on screen
        elif self.mode == "lines":
            self.read()  # the first line's rate counts from here
            while not self._wait():
                self.console.print(plain_line(self.read()), markup=False, highlight=False, soft_wrap=True)

    def _wait(self) -> bool:
        """Sleep one period (waking early when done); True when done."""
        deadline = time.monotonic() + self.every_s
        while time.monotonic() < deadline:
            if self.done():
                return True
            time.sleep(min(0.1, self.every_s))
        return self.done()


def daemon_view(daemon: Any, console: Console, mode: str) -> StatusView:
    """The view of a built daemon (serving.daemon.build), not yet started."""
    notes = JournalNotes(daemon.journal.path)
    return StatusView(lambda: snapshot(daemon, notes), console, mode,
                      lambda: daemon.telemetry.state in ("stopping", "stopped"))  # fmt: skip
