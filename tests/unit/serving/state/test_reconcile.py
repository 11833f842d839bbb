"""Reconciliation after a crash at each step of the daemon's send: the venue is the truth, nothing is
sent twice, no fill is lost or booked twice, every position comes back with what it needs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.config import EngineConfig
from serving.engine import Engine
from serving.events import MARKET, STOP, MarketLimits, Quote
from serving.features import ROLES
from serving.state.reconcile import RestoredPosition, reconcile


def _agree(desk) -> None:
    """The journal and the venue agree: the same fills, the same positions, no order left in doubt."""
    journal, broker = desk.journal, desk.broker
    assert sorted(f.fill_id for f in broker.fills_since(0)) == sorted(
        r[0] for r in journal._db.execute("SELECT fill_id FROM fills")
    )
    assert {s: (p.qty, p.entry_px) for s, p in journal.open_positions().items()} == {
        s: tuple(p) for s, p in broker.positions().items()
    }
    for entry in journal.unresolved():
        status = broker.lookup(entry.order.client_id)
        assert status is not None and status.state in ("pending", "working"), entry


def test_an_order_journaled_but_never_sent_is_not_sent_again(desk):
    desk.quote(99.99, 100.01)
    desk.decide(desk.market("a", 1))  # the crash comes before broker.submit
    desk.restart()
    report = reconcile(desk.journal, desk.broker, "resume", desk.now)
    assert [o.client_id for o in report.unsent] == ["a"]
    assert desk.journal.order("a").state == "unsent" and desk.broker.lookup("a") is None
    assert report.flatten == () and report.open_orders == () and report.positions == ()
    assert any("a: intent in the journal, unknown to the venue" in line for line in report.lines)
    _agree(desk)
    again = reconcile(desk.journal, desk.broker, "resume", desk.now)
    assert again.unsent == again.adopted == again.fills_booked == ()  # nothing left to do
    assert [kind for _, kind, _ in desk.journal.notes()] == ["reconcile", "reconcile"]


def test_an_order_sent_whose_answer_was_lost_is_adopted_by_client_id(desk):
    desk.quote(99.99, 100.01)
    record = desk.decide(desk.limit("b", 1, 99.95))
    desk.send(record)  # the venue has it; the crash comes before journal.sent
    desk.restart()
    report = reconcile(desk.journal, desk.broker, "resume", desk.now)
    assert report.adopted == (("b", "working"),) and report.unsent == ()
    assert desk.journal.order("b").state == "working"
    assert [o.client_id for o in report.open_orders] == ["b"] and report.unknown_orders == ()
    assert [c.client_id for r in report.cancel_stale for c in r.cancels] == ["b"]  # the new engine knows none
    _agree(desk)


def test_a_fill_while_down_is_booked_once(desk):
    desk.quote(99.99, 100.01, 5.0, 5.0)
    desk.trade(desk.limit("b", 1, 99.98, qty=2.0))
    desk.quote(99.96, 99.97, journal=False)  # fills b while the daemon is down
    desk.restart()
    report = reconcile(desk.journal, desk.broker, "resume", desk.now)
    assert [f.fill_id for f in report.fills_booked] == ["b:1"]
    assert desk.journal.order("b")[1:3] == ("filled", 2.0)
    ((symbol, qty, entry_px, stop_px),) = report.positions
    assert (symbol, qty, entry_px, math.isnan(stop_px)) == (desk.SYMBOL, 2.0, 99.98, True)  # no stop known
    assert report.position_diffs == (f"{desk.SYMBOL}: journal flat, venue +2 @ 99.98: the venue's taken",)
    _agree(desk)
    assert reconcile(desk.journal, desk.broker, "resume", desk.now).fills_booked == ()


def test_fills_the_journal_half_booked_are_completed_not_doubled(desk):
    desk.quote(99.99, 100.01, 1.0, 1.0)
    record = desk.decide(desk.market("m", 1, qty=3.0))  # walks the book: three fills
    events = desk.send(record)
    assert [e.fill_id for e in events] == ["m:1", "m:2"]
    desk.journal.sent(["m"], desk.now)
    desk.journal.fill(events[0])  # the crash comes after the first fill was booked
    desk.restart()
    report = reconcile(desk.journal, desk.broker, "flatten", desk.now)
    assert [f.fill_id for f in report.fills_booked] == ["m:2"]
    assert desk.journal.order("m").filled_qty == 3.0 and desk.journal.order("m").state == "filled"
    _agree(desk)


def test_an_order_still_in_flight_stays_sent_until_it_arrives(tmp_path, desk_class):
    desk = desk_class(tmp_path, latency_ms=50.0)
    desk.quote(99.99, 100.01)
    record = desk.decide(desk.limit("b", 1, 99.95))
    desk.send(record)
    desk.restart()
    report = reconcile(desk.journal, desk.broker, "resume", desk.now)
    assert report.adopted == (("b", "pending"),) and desk.journal.order("b").state == "sent"
    _agree(desk)


def test_a_liquidation_while_down_is_booked_from_the_venue_fills(desk):
    desk.quote(99.99, 100.01, 500.0, 500.0)
    desk.trade(desk.market("m", 1, qty=100.0))
    desk.quote(90.0, 90.02, 50.0, 50.0, journal=False)
    desk.restart()
    report = reconcile(desk.journal, desk.broker, "resume", desk.now)
    assert [f.fill_id for f in report.fills_booked] == ["liquidation-1:1"]
    assert report.positions == () and desk.journal.open_positions() == {}
    assert any("no order of ours in the journal" in line for line in report.lines)
    _agree(desk)


def _with_a_protected_position(desk) -> None:
    desk.quote(99.99, 100.01, 5.0, 5.0)
    desk.trade(desk.market("m", 1, qty=2.0))
    desk.journal.position(desk.SYMBOL, 2.0, 100.01, 99.0, desk.now)  # the engine's stop
    desk.trade(desk.stop("s", -1, 99.0, qty=2.0), desk.limit("tp", -1, 100.5, qty=2.0))
    desk.restart()


def test_resume_hands_the_positions_to_a_new_engine_which_arms_their_stops(desk):
    _with_a_protected_position(desk)
    report = reconcile(desk.journal, desk.broker, "resume", desk.now)
    assert report.needs_stop == (RestoredPosition(desk.SYMBOL, 2.0, 100.01, 99.0),)
    assert report.flatten == () and report.wallet_usdt == desk.broker.wallet_usdt()
    assert [c.client_id for r in report.cancel_stale for c in r.cancels] == ["s", "tp"]
    assert any("the old stop s is cancelled once the new one works" in line for line in report.lines)
    config = EngineConfig()
    limits = MarketLimits(desk.SYMBOL, 125.0, 0.01, 0.001, 5.0)
    engine = Engine(config, [getattr(config.features, r) for r in ROLES], [limits], report.wallet_usdt)
    engine.on_tick(Quote(desk.SYMBOL, desk.now, 99.99, 5.0, 100.01, 5.0), np.zeros(len(ROLES)), 0.5)
    stops = [o for fill in report.engine_fills() for o in engine.on_fill(fill).orders if o.type == STOP]
    assert len(stops) == 1 and stops[0].side == -1 and stops[0].qty == 2.0 and stops[0].reduce_only
    assert engine.portfolio.positions[desk.SYMBOL].qty == 2.0


def test_flatten_cancels_the_open_orders_and_closes_with_reduce_only_market_orders(desk):
    _with_a_protected_position(desk)
    report = reconcile(desk.journal, desk.broker, "flatten", desk.now, client_id_prefix="r1")
    assert report.needs_stop == () and report.cancel_stale == ()
    (record,) = report.flatten
    assert [c.client_id for c in record.cancels] == ["s", "tp"]
    (close,) = record.orders
    assert (close.type, close.side, close.qty, close.reduce_only, close.client_id) == (MARKET, -1, 2.0, True,
                                                                                     f"r1-{desk.now}-1")  # fmt: skip
    desk.trade(*record.orders, cancels=tuple(c.client_id for c in record.cancels))  # the daemon sends it
    assert desk.broker.positions() == {} and desk.broker.open_orders() == []
    assert desk.journal.order("s").state == "cancelled" and desk.journal.order(close.client_id).state == "filled"
    _agree(desk)


def test_positions_that_differ_are_reported_and_the_venue_wins(desk):
    desk.quote(99.99, 100.01, 5.0, 5.0)
    desk.trade(desk.market("m", 1, qty=2.0))
    desk.journal.position(desk.SYMBOL, 1.0, 100.0, 99.0, desk.now)  # the engine believed otherwise
    desk.journal.position("ETH/USDT:USDT", -3.0, 3_000.0, 3_100.0, desk.now)
    report = reconcile(desk.journal, desk.broker, "resume", desk.now)
    assert report.position_diffs == (
        f"{desk.SYMBOL}: journal +1 @ 100, venue +2 @ 100.01: the venue's taken",
        "ETH/USDT:USDT: journal -3 @ 3000, venue +0 @ 0: the venue's taken",
    )
    assert report.needs_stop == (RestoredPosition(desk.SYMBOL, 2.0, 100.01, 99.0),)
    _agree(desk)


def test_an_unknown_policy_is_refused(desk):
    with pytest.raises(ValueError, match="on_restart"):
        reconcile(desk.journal, desk.broker, "hope", desk.now)
