"""The paper broker outlives its process: what it accepted, filled and holds is on disk after each call."""

from __future__ import annotations

import sqlite3

import pytest

from serving.brokers.base import CANCELLED, FILLED, PENDING, REJECTED, WORKING, BrokerError, HeldPosition
from serving.brokers.paper import DuplicateClientIdError, PaperBroker
from serving.events import Fill, OrderDone


def _trade_a_little(p) -> list:
    """A position from a market buy, a resting bid filled by the market, one still resting, a stop, a
    cancelled order and a rejected one. Returns the market buy's events."""
    p.quote(99.99, 100.01, 5.0, 5.0)
    bought = p.send(p.order("m1", 1, qty=2.0))  # buys 2 at the ask
    p.send(p.limit("b1", 1, 99.98, 1.0), p.limit("b2", 1, 99.90, 1.0), p.stop("s1", -1, 99.00, 2.0))
    p.send(p.limit("x1", -1, 99.00, 1.0))  # post-only that would cross: rejected
    p.send(p.limit("c1", -1, 100.50, 1.0))
    p.send(cancels=("c1",))
    p.quote(99.97, 99.98, 5.0, 5.0)  # sellers reach b1: filled
    return bought


def test_fills_carry_ids_and_every_order_can_be_looked_up(paper):
    events = _trade_a_little(paper)
    assert [(type(e), e.fill_id) for e in events] == [(Fill, "m1:1")]
    broker = paper.broker
    status = broker.lookup("b1")
    assert (status.state, status.filled_qty, [f.fill_id for f in status.fills]) == (FILLED, 1.0, ["b1:1"])
    assert broker.lookup("b2")[1:4] == (WORKING, 0.0, "")
    assert broker.lookup("x1")[1:4] == (REJECTED, 0.0, "rejected")
    assert broker.lookup("c1")[1:4] == (CANCELLED, 0.0, "cancelled")
    assert broker.lookup("nobody") is None
    assert [o.client_id for o in broker.open_orders()] == ["b2", "s1"]


def test_a_reopened_broker_has_the_same_account_orders_and_fills(paper):
    _trade_a_little(paper)
    before = paper.broker
    account, positions, working = before.account(), before.positions(), before.open_orders()
    statuses = {cid: before.lookup(cid) for cid in ("m1", "b1", "b2", "s1", "x1", "c1")}
    fills = before.fills_since(0)
    after = paper.reopen()  # the old object is dropped unclosed: as after a kill -9
    assert after.account() == account
    assert after.wallet_usdt() == before.wallet_usdt()
    held = {paper.SYMBOL: HeldPosition(3.0, pytest.approx(100.0))}  # 2 @ 100.01, 1 @ 99.98
    assert after.positions() == positions == held
    assert after.open_orders() == working
    assert {cid: after.lookup(cid) for cid in statuses} == statuses
    assert after.fills_since(0) == fills
    assert [f.fill_id for f in fills] == ["m1:1", "b1:1"]
    # queue positions came back too
    assert [(r.order.client_id, r.queue_ahead) for r in after.venue._books[paper.SYMBOL].buys] == [
        (r.order.client_id, r.queue_ahead) for r in before.venue._books[paper.SYMBOL].buys
    ]


def test_a_restored_venue_goes_on_exactly_as_one_that_never_stopped(tmp_path, paper_class):
    def first_half(p):
        _trade_a_little(p)
        p.trade(99.90, 0.5, -1)  # eats part of the queue ahead of b2

    def second_half(p):
        out = []
        out += p.trade(99.90, 3.0, -1)  # eats the queue ahead of b2
        out += p.quote(99.50, 99.60)  # the ask crosses b2: filled
        out += p.trade(98.90, 1.0, -1)  # triggers the stop: sells 2 of the 4, walking the book
        out += p.send(p.order("m2", -1, qty=2.0))  # the thin book: 1.4 within the slippage cap, the rest expires
        return out

    straight = paper_class(tmp_path / "a.db")
    first_half(straight)
    expected = second_half(straight)
    crashed = paper_class(tmp_path / "b.db")
    first_half(crashed)
    crashed.reopen()
    assert second_half(crashed) == expected
    assert crashed.broker.account() == straight.broker.account()
    assert crashed.broker.positions() == straight.broker.positions()
    assert [f.fill_id for f in expected if type(f) is Fill] == ["b2:1", "s1:1", "s1:2", "m2:1"]


def test_an_order_in_flight_survives_as_pending_and_arrives_after_the_restart(tmp_path, paper_class):
    p = paper_class(tmp_path / "p.db", config=paper_class.venue_config(latency_ms=50.0))
    p.quote(99.99, 100.01)
    assert p.send(p.limit("b1", 1, 99.95)) == []
    assert p.broker.lookup("b1").state == PENDING
    assert [o.client_id for o in p.broker.open_orders()] == ["b1"]
    p.reopen()
    assert p.broker.lookup("b1").state == PENDING
    assert p.quote(99.99, 100.01, dt_ms=60) == []  # arrives before this quote: rests, no event
    assert p.broker.lookup("b1").state == WORKING
    assert p.reopen().lookup("b1").state == WORKING  # the arrival was saved although no event came


def test_a_client_id_is_never_accepted_twice(paper):
    paper.quote(99.99, 100.01)
    paper.send(paper.order("m1", 1))
    paper.send(paper.limit("b1", 1, 99.90))
    with pytest.raises(DuplicateClientIdError, match="m1"):
        paper.send(paper.order("m1", 1), paper.limit("b2", 1, 99.80))
    assert paper.broker.lookup("b2") is None  # nothing of that decision went out
    assert paper.broker.positions()[paper.SYMBOL].qty == 1.0


def test_market_data_alone_saves_queue_positions_now_and_then(tmp_path, paper_class):
    p = paper_class(tmp_path / "p.db")
    p.quote(99.99, 100.01, 5.0, 5.0)
    p.send(p.limit("b1", 1, 99.99))  # joins the bid behind 5
    p.trade(99.99, 2.0, -1, dt_ms=10)  # 3 ahead now, no fill, not saved yet (10 ms < 1 s)
    assert p.reopen().venue._working["b1"][1].queue_ahead == 5.0
    p.trade(99.99, 2.0, -1, dt_ms=10)
    p.trade(99.99, 1.0, -1, dt_ms=2_000)  # 2 s later: saved
    assert p.reopen().venue._working["b1"][1].queue_ahead == 2.0


def test_cancel_and_liquidation_events_are_booked(paper):
    paper.quote(99.99, 100.01, 50.0, 50.0)
    paper.send(paper.order("m1", 1, qty=100.0))  # 10k notional at 20x: liquidated some 4 % lower
    events = paper.quote(90.0, 90.02, 50.0, 50.0)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Liquidation", "Fill"]
    assert events[1].fill_id == "liquidation-1:1"
    broker = paper.reopen()
    assert broker.positions() == {}
    assert [f.fill_id for f in broker.fills_since(0)] == ["m1:1", "m1:2", "liquidation-1:1"]  # m1 walked the book
    assert broker.lookup("liquidation-1") is None  # not an order of ours
    rows = sqlite3.connect(paper.path).execute("SELECT kind FROM venue_events").fetchall()
    assert rows == [("Liquidation",)]


def test_an_account_opened_with_other_markets_or_settings_is_refused(paper):
    paper.broker.close()
    with pytest.raises(BrokerError, match="another venue configuration"):
        PaperBroker(paper.path, paper.venue_config(latency_ms=5.0), [paper.LIMITS], 10_000.0)


def test_the_file_is_wal_without_an_fsync_per_commit(paper):
    db = paper.broker._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: kill -9 safe (the crash test)


def test_order_done_events_pass_through_unchanged(paper):
    paper.quote(99.99, 100.01)
    paper.send(paper.limit("b1", 1, 99.90))
    assert paper.send(cancels=("b1",)) == [OrderDone(paper.SYMBOL, paper.now, "b1", "cancelled")]
