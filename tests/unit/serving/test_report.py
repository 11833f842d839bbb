import base64
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

import serving.report as report
from serving.metrics import FILL_COLUMNS, FUNDING_COLUMNS, NS_PER_S, Ledger, summarise
from serving.report import MAX_POINTS, downsample, render_html, write_report

T0 = 1_704_067_200_000_000_000
SYMBOL = "BTC/USDT:USDT"
VOID = {"meta", "img", "br", "hr", "link", "input"}
PROVENANCE = {"model_uri": "models:/autoscalp-ensemble@champion", "model_version": 7,
              "data_fingerprint": "3f9a0c", "config_hash": "c0ffee12", "code_version": "ac221ef"}  # fmt: skip


class StrictParser(HTMLParser):
    """Fails on a closing tag that does not close the innermost open element."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.doctype = False
        self.images: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.doctype |= decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag) -> None:
        assert self.open and self.open[-1] == tag, (tag, self.open[-3:])
        self.open.pop()


def parse(page: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.doctype and parser.open == []
    return parser


def make_ledger(samples: int = 3_600, trades: int = 40, seed: int = 0) -> Ledger:
    """One sample a second, a round trip every ``samples / trades`` seconds, one liquidation."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(samples, dtype=np.int64) * NS_PER_S
    mid = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 2e-4, samples)))
    at = np.linspace(0, samples - 1, 2 * trades).astype(int)
    side = np.tile([1, -1], trades)
    fills = pd.DataFrame({
        "ts_ns": ts[at], "symbol": SYMBOL, "client_id": [f"c{i}" for i in range(len(at))], "side": side,
        "price": mid[at], "qty": 0.5, "fee_usdt": mid[at] * 0.5 * 2e-4, "liquidity": "maker",
        "strategy": np.where(np.arange(len(at)) % 4 < 2, "market_making", "momentum"),
        "regime": np.where(np.arange(len(at)) % 8 < 4, "calm", "trend"),
    })  # fmt: skip
    if trades:
        fills.loc[len(fills) - 1, "liquidity"] = "liquidation"
    position = np.zeros(samples)
    for i, s in zip(at, side, strict=True):
        position[i:] += s * 0.5
    equity = pd.DataFrame({
        "ts_ns": ts, "equity_usdt": 10_000.0 + np.cumsum(rng.normal(0.0, 0.5, samples)), "position_qty": position,
        "notional_usdt": np.abs(position) * mid, "leverage": 5.0, "mid": mid,
        "regime": np.where(np.arange(samples) < samples // 2, "calm", "trend"),
    })  # fmt: skip
    funding = pd.DataFrame({"ts_ns": [T0 + 1_800 * NS_PER_S], "symbol": [SYMBOL], "rate": [1e-4],
                            "amount_usdt": [-0.2]})  # fmt: skip
    return Ledger(10_000.0, equity, fills, funding, 1 if trades else 0, T0, int(ts[-1]) + NS_PER_S)


def flat_ledger() -> Ledger:
    ts = T0 + np.arange(0, 3_600, 60, dtype=np.int64) * NS_PER_S
    equity = pd.DataFrame({"ts_ns": ts, "equity_usdt": 10_000.0, "position_qty": 0.0, "notional_usdt": 0.0,
                           "leverage": 5.0, "mid": 100.0, "regime": "calm"})  # fmt: skip
    fills, funding = pd.DataFrame(columns=FILL_COLUMNS), pd.DataFrame(columns=FUNDING_COLUMNS)
    return Ledger(10_000.0, equity, fills, funding, 0, T0, T0 + 3_600 * NS_PER_S)


@pytest.fixture(scope="module")
def run():
    ledger = make_ledger()
    return ledger, summarise(ledger)


def test_page_is_well_formed_self_contained_and_has_the_numbers(run):
    ledger, summary = run
    baselines = {"flat": summarise(flat_ledger()), "no-model": {"net_pnl_usdt": -12.5, "trades": 3}}
    page = render_html(summary, ledger, baselines, title="BTC <walk-forward> & co", provenance=PROVENANCE)
    parser = parse(page)

    assert len(parser.images) == 4
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert not re.search(r"<(script|link)\b", page) and "http://" not in page and "https://" not in page

    assert "BTC &lt;walk-forward&gt; &amp; co" in page
    assert f"{summary['net_pnl_usdt']:,.2f}" in page and f"{summary['max_drawdown_pct']:,.2f}%" in page
    assert f"<td>trades</td><td>{summary['trades']:,}</td>" in page
    assert summary["trade_list_hash"] in page and summary["annualisation"] in page
    for value in PROVENANCE.values():
        assert str(value) in page
    assert "<th>flat</th>" in page and "<th>no-model</th>" in page and "-12.50" in page
    for name in (*summary["by_strategy"], *summary["by_regime"]):
        assert f"<td>{name}</td>" in page


def test_zero_trades_renders(run):
    ledger = flat_ledger()
    summary = summarise(ledger)
    page = render_html(summary, ledger, {"model": run[1]})
    parser = parse(page)
    assert len(parser.images) == 4 and "no round trips" in page
    assert "<td>trades</td><td>0</td>" in page and "n/a" in page


def test_an_empty_ledger_renders():
    ledger = Ledger(1_000.0, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), 0, T0, T0 + 60 * NS_PER_S)
    parse(render_html(summarise(ledger), ledger))


def test_downsample_keeps_extremes_and_ends():
    rng = np.random.default_rng(1)
    values = np.cumsum(rng.normal(size=200_003))
    keep = downsample(values, 5_000)
    assert len(keep) <= 5_000 and np.all(np.diff(keep) > 0)
    assert {0, len(values) - 1, int(values.argmin()), int(values.argmax())} <= set(keep.tolist())
    assert downsample(values[:10], 5_000).tolist() == list(range(10))


def test_huge_ledger_is_thinned_for_the_plots(monkeypatch):
    ledger = make_ledger(samples=200_000, trades=6_000)
    drawn: list[int] = []
    original = report.downsample

    def counting(values, max_points=MAX_POINTS):
        keep = original(values, max_points)
        drawn.append(len(keep))
        return keep

    monkeypatch.setattr(report, "downsample", counting)
    page = render_html(summarise(ledger), ledger)
    assert len(parse(page).images) == 4
    assert drawn and max(drawn) <= MAX_POINTS
    assert len(page) < 2_000_000  # a few PNGs, not 200k points of markup


def test_write_report_is_atomic(run, tmp_path, monkeypatch):
    ledger, summary = run
    path = tmp_path / "reports" / "backtest.html"
    assert write_report(path, summary, ledger, provenance=PROVENANCE) == path
    first = path.read_text(encoding="utf-8")
    parse(first)
    assert sorted(p.name for p in path.parent.iterdir()) == ["backtest.html"]

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(path, summary, ledger, title="second")
    monkeypatch.undo()
    assert path.read_text(encoding="utf-8") == first
    assert sorted(p.name for p in path.parent.iterdir()) == ["backtest.html"]

    def broken_render(*args, **kwargs):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report, "render_html", broken_render)
    fresh = tmp_path / "fresh.html"
    with pytest.raises(RuntimeError):
        write_report(fresh, summary, ledger)
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["reports"]
