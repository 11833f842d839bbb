"""The terminal status of `autoscalp serve` (flows/serve_view.py): the panel and the plain line are
pure functions of a health reading; a terminal gets the panel, anything else the plain line."""

from __future__ import annotations

import io
import math
import threading

from rich.console import Console

from flows.serve_view import StatusView, plain_line, render, view_mode, with_rates

T = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


def reading(**changes) -> dict:
    snap = {
        "symbol": "BTC/USDT:USDT", "state": "running", "feed": "connected",
        "feed_stats": {"received": 1000, "conflated": 12, "dropped": 0, "reconnects": 1, "gaps": 0},
        "queue_depth": 3, "ticks": 12_345, "trades": 6_000, "events": 18_345, "wall_s": 100.0,
        "latency_p50_us": 11.5, "latency_p99_us": 27.25, "position_qty": 0.012, "leverage": 2.5,
        "equity_usdt": 10_012.5, "pnl_usdt": 12.5, "drawdown": 0.0123, "kill_state": "reducing",
        "kill_reason": "stale market data: BTC/USDT:USDT silent for 6000 ms", "paused": "", "warming": "",
        "model": "autoscalp-BTC-USDT-USDT v3", "model_age_s": 7_200.0, "model_alert": None, "model_warming": None,
        "hit_rate": 0.534, "drift_max_psi": 0.31,
        "notes": [(T, "restart", "run 2"), (T + 10**9, "model", "swap autoscalp-BTC-USDT-USDT v2 -> v3"),
                  (T + 2 * 10**9, "control", "pause: lunch (127.0.0.1)\nsecond line")],
        "ticks_per_s": 4_321.0,
    }  # fmt: skip
    return {**snap, **changes}


def text_of(renderable) -> str:  # noqa: ANN001
    console = Console(file=io.StringIO(), width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_panel_shows_every_figure_of_the_reading():
    text = text_of(render(reading()))
    for expected in ("BTC/USDT:USDT", "running", "connected (conflated 12, reconnects 1)", "4,321/s", "12,345 quotes",
                     "p50 11.5, p99 27.2 us", "+0.012", "2.50x", "+12.50 USDT", "10,012.50 USDT", "1.23%",
                     "53.4%", "reducing (stale market data: BTC/USDT:USDT silent for 6000 ms)",
                     "autoscalp-BTC-USDT-USDT v3", "2.0 h", "0.310", "00:00:00", "run 2", "swap", "00:00:02",
                     "pause: lunch (127.0.0.1)"):  # fmt: skip
        assert expected in text, (expected, text)
    assert "second line" not in text  # a note's first line only


def test_the_panel_says_why_nothing_opens_and_survives_missing_figures():
    text = text_of(render(reading(warming="autoscalp-BTC-USDT-USDT v3 warming up", paused="operator pause",
                                  model_alert="MlflowException: down; still trading v2", model_warming=4,
                                  drift_max_psi=None, hit_rate=math.nan, ticks_per_s=math.nan, notes=[],
                                  pnl_usdt=math.nan, latency_p99_us=math.nan)))  # fmt: skip
    assert "paused: operator pause; autoscalp-BTC-USDT-USDT v3 warming up" in text
    assert "MlflowException: down; still trading v2" in text and "(loading v4)" in text
    assert "journal" not in text and "p99 - us" in text and "(-/s)" in text


def test_the_plain_line_is_one_line_with_the_essentials():
    line = plain_line(reading(model_alert="load failed"))
    assert "\n" not in line
    for expected in ("running", "feed connected", "ticks 12,345 (4,321/s)", "queue 3", "p50/p99 12/27 us",
                     "pos +0.012", "lev 2.50x", "pnl +12.50", "dd 1.23%", "kill reducing (stale market data",
                     "model autoscalp-BTC-USDT-USDT v3", "ALERT load failed"):  # fmt: skip
        assert expected in line, (expected, line)
    assert "nan" not in plain_line(reading(pnl_usdt=math.nan, drawdown=math.nan, ticks_per_s=math.nan)).lower()


def test_a_terminal_gets_the_panel_a_pipe_the_plain_line_json_nothing():
    assert view_mode(as_json=False, is_terminal=True) == "live"
    assert view_mode(as_json=False, is_terminal=False) == "lines"
    assert view_mode(as_json=True, is_terminal=True) == view_mode(as_json=True, is_terminal=False) == "none"


def test_rates_come_from_two_readings():
    first = with_rates(reading(ticks=1_000, trades=500, wall_s=10.0), None)
    assert math.isnan(first["ticks_per_s"])
    assert with_rates(reading(ticks=3_000, trades=1_500, wall_s=12.0), first)["ticks_per_s"] == 1_500.0


def test_off_a_terminal_the_view_prints_plain_lines_until_done():
    out = io.StringIO()
    console = Console(file=out, width=400)
    assert not console.is_terminal
    reads = []
    done = threading.Event()

    def source() -> dict:
        reads.append(1)
        if len(reads) >= 3:
            done.set()
        return reading(wall_s=float(len(reads)), ticks=100 * len(reads), trades=0)

    view = StatusView(source, console, view_mode(False, console.is_terminal), done.is_set, every_s=0.02).start()
    view.join(5.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all("running feed connected" in line for line in lines), lines
    assert "(100/s)" in lines[0] and "\x1b[" not in out.getvalue()  # no colour codes in a log


def test_json_shows_nothing():
    out = io.StringIO()
    view = StatusView(lambda: reading(), Console(file=out), "none", lambda: False, every_s=0.01).start()
    view.join(0.1)
    assert out.getvalue() == ""
