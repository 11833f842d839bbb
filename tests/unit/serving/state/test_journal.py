"""The journal: states move one way, each write is whole, a fill seen twice is booked once."""

from __future__ import annotations

import math

import pytest

from serving.events import Fill, OrderDone
from serving.state.journal import DuplicateOrderError, Journal


@pytest.fixture
def journal(tmp_path) -> Journal:
    return Journal(tmp_path / "j" / "journal.db")


def _fill(desk, cid: str, qty: float, fill_id: str = "", ts_ns: int | None = None, price: float = 100.0) -> Fill:
    return Fill(desk.SYMBOL, ts_ns or desk.T0, cid, price, qty, 1, 0.02, fill_id)


def test_an_order_goes_intent_sent_working_filled(journal, desk):
    record = desk.record(desk.limit("a", 1, 99.0, qty=1.0))
    journal.decision(record)
    assert journal.order("a").state == "intent" and journal.unresolved()[0].order == record.orders[0]
    journal.sent(["a"], desk.T0 + 1)
    assert journal.order("a")[1:2] + journal.order("a")[5:6] == ("sent", desk.T0 + 1)
    assert journal.fill(_fill(desk, "a", 0.4, "a:1"))
    assert journal.order("a")[1:3] == ("working", 0.4)
    assert journal.fill(_fill(desk, "a", 0.6, "a:2", ts_ns=desk.T0 + 5))
    entry = journal.order("a")
    assert (entry.state, entry.filled_qty, entry.done_ns) == ("filled", 1.0, desk.T0 + 5)
    assert journal.unresolved() == []
    assert [f.fill_id for f in journal.fills_for("a")] == ["a:1", "a:2"]


def test_a_fill_seen_twice_is_booked_once(journal, desk):
    journal.intent(desk.limit("a", 1, 99.0, qty=2.0), desk.T0)
    assert journal.fill(_fill(desk, "a", 0.5, "a:1"))
    assert not journal.fill(_fill(desk, "a", 0.5, "a:1"))
    assert journal.order("a").filled_qty == 0.5
    assert journal.fill(_fill(desk, "a", 0.5, "a:2"))  # same content, another execution: booked
    assert not journal.fill(_fill(desk, "a", 0.5, "a:2", price=101.0))  # the id decides
    # a venue without fill ids: the content is the key
    assert journal.fill(_fill(desk, "a", 0.25))
    assert not journal.fill(_fill(desk, "a", 0.25))
    assert journal.order("a").filled_qty == 1.25
    assert journal.last_fill_ns() == desk.T0


def test_order_done_ends_an_order_once_and_a_late_fill_is_still_booked(journal, desk):
    journal.intent(desk.limit("a", 1, 99.0), desk.T0)
    journal.sent(["a"], desk.T0)
    assert journal.order_done(OrderDone(desk.SYMBOL, desk.T0 + 2, "a", "cancelled"))
    assert not journal.order_done(OrderDone(desk.SYMBOL, desk.T0 + 3, "a", "expired"))
    assert not journal.order_done(OrderDone(desk.SYMBOL, desk.T0 + 3, "nobody", "cancelled"))
    assert journal.fill(_fill(desk, "a", 0.3, "a:1"))  # never lose a fill
    entry = journal.order("a")
    assert (entry.state, entry.reason, entry.filled_qty, entry.done_ns) == ("cancelled", "cancelled", 0.3, desk.T0 + 2)
    assert journal.fill(_fill(desk, "liquidation-1", 1.0, "liquidation-1:1"))  # no order of ours: booked
    assert journal.order("liquidation-1") is None and len(journal.fills_for("liquidation-1")) == 1


def test_a_decision_and_its_intents_are_one_write(journal, desk):
    journal.intent(desk.limit("b", 1, 98.0), desk.T0)
    record = desk.record(desk.limit("a", 1, 99.0), desk.limit("b", -1, 101.0), cancels=("b",))
    with pytest.raises(DuplicateOrderError, match="'b'"):
        journal.decision(record)
    assert journal.order("a") is None and journal.decisions() == []  # nothing of it was written
    assert journal.order("b").cancel_ns is None
    ok = desk.record(desk.limit("a", 1, 99.0), cancels=("b",))
    journal.decision(ok)
    assert journal.order("b").cancel_ns == ok.ts_ns and journal.order("a").state == "intent"
    assert journal.decisions()[0]["orders"][0]["client_id"] == "a"


def test_positions_runs_and_notes(journal, desk):
    journal.position(desk.SYMBOL, 1.5, 100.0, 99.5, desk.T0)
    journal.position("ETH/USDT:USDT", -2.0, 3_000.0, math.nan, desk.T0)
    journal.position("SOL/USDT:USDT", 0.0, 0.0, math.nan, desk.T0)
    positions = journal.open_positions()
    assert set(positions) == {desk.SYMBOL, "ETH/USDT:USDT"}
    assert positions[desk.SYMBOL] == (1.5, 100.0, 99.5, desk.T0)
    assert math.isnan(positions["ETH/USDT:USDT"].stop_px)
    assert journal.begin_run(desk.T0) == 1
    journal.note("kill_switch", "halted: daily loss", desk.T0 + 1)
    journal.close()
    again = Journal(journal.path)
    assert again.begin_run(desk.T0 + 2) == 2
    assert [kind for _, kind, _ in again.notes()] == ["restart", "kill_switch", "restart"]
    assert again.open_positions()[desk.SYMBOL] == positions[desk.SYMBOL]


def test_the_file_is_wal_with_full_sync(journal):
    assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_paper_journal_does_not_fsync_each_commit(tmp_path):
    paper = Journal(tmp_path / "paper.sqlite", durable=False)
    assert paper._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    paper.close()


def test_adopt_takes_the_venue_state(journal, desk):
    journal.intent(desk.limit("a", 1, 99.0), desk.T0)
    journal.adopt("a", "pending", desk.T0 + 1)
    assert journal.order("a").state == "sent"
    journal.adopt("a", "unsent", desk.T0 + 2, "never received")
    assert journal.order("a")[1:4] == ("unsent", 0.0, "never received") and journal.unresolved() == []
    with pytest.raises(ValueError):
        journal.adopt("a", "lost", desk.T0)
