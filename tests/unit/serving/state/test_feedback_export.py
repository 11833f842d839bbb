"""The journal's decisions and fills exported to the store: each row once, whatever crashes between
the parts and the watermark; each row with the version that was trading; read back by the retrain's
feedback with PnL, fees and the hit rate against the store's quotes."""

from __future__ import annotations

import math

import pyarrow as pa

from pipeline.data.schemas import Kind
from pipeline.data.store import TickStore
from pipeline.monitoring.feedback import champion_feedback, live_root, read_live
from pipeline.training.aliases import VersionInfo
from serving.events import LIMIT, DecisionRecord, Fill, Order
from serving.state.feedback import FeedbackExporter, note_model
from serving.state.journal import Journal

SYMBOL = "BTC/USDT:USDT"
T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
S = 1_000_000_000
DAY = 86_400 * S


def version(n: int) -> VersionInfo:
    return VersionInfo("autoscalp-BTC-USDT-USDT", n, ("champion",), {}, "run")


def decide(journal: Journal, ts: int, p_up: float, n: int) -> None:
    order = Order(f"as1-{n}", SYMBOL, 1 if p_up > 0.5 else -1, LIMIT, 100.0, 0.01, True, False, "entry")
    journal.decision(DecisionRecord(ts, SYMBOL, "tick", ("x",), (1.0,), p_up, math.nan, True, "normal", "scalp", 2.0,
                                    "active", "", (), (order,), (), ()))  # fmt: skip


def fill(journal: Journal, ts: int, side: int, price: float, n: int) -> None:
    journal.fill(Fill(SYMBOL, ts, f"as1-{n}", price, 0.01, side, 0.002, f"f{n}"))


def test_export_once_with_the_trading_version_and_again_after_a_lost_watermark(tmp_path):
    journal = Journal(tmp_path / "daemon.sqlite")
    journal.begin_run(T0)
    note_model(journal, version(1), T0)
    decide(journal, T0 + S, 0.7, 1)
    fill(journal, T0 + 2 * S, 1, 100.0, 1)
    exporter = FeedbackExporter(journal.path, tmp_path / "store")
    assert exporter.export() == {"decisions": 1, "fills": 1}
    assert exporter.export() == {"decisions": 0, "fills": 0}

    note_model(journal, version(2), T0 + 3 * S)  # a swap
    decide(journal, T0 + DAY + S, 0.3, 2)  # the next day: another partition
    fill(journal, T0 + DAY + 2 * S, -1, 101.0, 2)
    assert exporter.export() == {"decisions": 1, "fills": 1}
    # a crash after the parts were renamed and before the watermark moved: export again from scratch
    for mark in (live_root(tmp_path / "store") / "_watermarks").glob("*.json"):
        mark.unlink()
    decide(journal, T0 + DAY + 3 * S, 0.6, 3)
    assert FeedbackExporter(journal.path, tmp_path / "store").export() == {"decisions": 1, "fills": 0}

    decisions = read_live(tmp_path / "store", "decisions", SYMBOL)
    fills = read_live(tmp_path / "store", "fills", SYMBOL)
    assert decisions["id"].tolist() == [1, 2, 3] and fills["id"].tolist() == [1, 2]
    assert decisions["model_version"].tolist() == [1, 2, 2] and fills["model_version"].tolist() == [1, 2]
    assert decisions["p_up"].tolist() == [0.7, 0.3, 0.6] and decisions["orders"].tolist() == [1, 1, 1]
    parts = sorted(p.relative_to(tmp_path / "store").as_posix() for p in (tmp_path / "store").rglob("part-*.parquet"))
    assert len(parts) == 5 and all(p.startswith("live/kind=") and "/symbol=BTC%2FUSDT%3AUSDT/date=2024-01-0" in p
                                   for p in parts)  # fmt: skip
    assert not list((tmp_path / "store").rglob(".*tmp"))


def test_a_new_journal_is_a_new_source_not_rows_below_the_watermark(tmp_path):
    store = tmp_path / "store"
    for attempt in range(2):  # the journal deleted and started again: its ids restart from 1
        path = tmp_path / "daemon.sqlite"
        for leftover in tmp_path.glob("daemon.sqlite*"):
            leftover.unlink()
        journal = Journal(path)
        journal.begin_run(T0 + attempt * S)
        note_model(journal, version(1), T0)
        decide(journal, T0 + 10 * S + attempt, 0.7, attempt)
        assert FeedbackExporter(path, store).export()["decisions"] == 1
        journal.close()
    assert len(read_live(store, "decisions", SYMBOL)) == 2
    assert FeedbackExporter(tmp_path / "none.sqlite", store).export() == {"decisions": 0, "fills": 0}


def test_the_champions_feedback_pnl_fees_and_hit_rate(tmp_path):
    journal = Journal(tmp_path / "daemon.sqlite")
    journal.begin_run(T0)
    note_model(journal, version(1), T0)
    decide(journal, T0 + S, 0.7, 1)
    fill(journal, T0 + S, 1, 100.0, 1)  # v1 opens a long
    note_model(journal, version(2), T0 + 2 * S)
    decide(journal, T0 + 3 * S, 0.3, 2)
    fill(journal, T0 + 3 * S, -1, 110.0, 2)  # v2 closes it: its realised PnL is 0.01 * 10
    decide(journal, T0 + 4 * S, 0.8, 3)
    FeedbackExporter(journal.path, tmp_path / "store").export()
    tick_store = TickStore(tmp_path / "store")  # the mids: up 1 per second, so P(up) > 0.5 hits
    ts = [T0 + i * S for i in range(12)]
    quotes = pa.table({"ts_ns": ts, "recv_ns": ts, "update_id": list(range(12)),
                       "bid_px": [99.5 + i for i in range(12)], "bid_qty": [1.0] * 12,
                       "ask_px": [100.5 + i for i in range(12)], "ask_qty": [1.0] * 12})
    with tick_store.locked():
        tick_store.write("binanceusdm", SYMBOL, Kind.QUOTES, quotes)

    feedback = champion_feedback(tmp_path / "store", SYMBOL, 2, "autoscalp-BTC-USDT-USDT", horizon_s=5.0)
    m = feedback["metrics"]
    assert (m["decisions"], m["fills"], m["decisions_with_orders"]) == (2, 1, 2)
    assert m["realised_pnl_usdt"] == 0.01 * 10.0 and m["fees_usdt"] == 0.002
    assert m["net_pnl_usdt"] == 0.01 * 10.0 - 0.002
    assert (m["hits"], m["misses"], m["hit_rate"]) == (1, 1, 0.5)  # P(up) 0.3 missed the rise, 0.8 caught it
    assert feedback["params"]["mid_source"] == "quotes" and feedback["params"]["first_ns"] == T0 + 3 * S
    assert champion_feedback(tmp_path / "store", SYMBOL, None)["notes"] == ["no serving champion: no live feedback"]
    empty = champion_feedback(tmp_path / "store", SYMBOL, 9)
    assert empty["metrics"]["fills"] == 0 and math.isnan(empty["metrics"]["hit_rate"]) and empty["notes"]
