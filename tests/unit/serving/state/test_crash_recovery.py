"""Paper trading killed with SIGKILL at random points, restarted and reconciled each time: the journal
and the venue agree, no order is sent twice, no fill is lost or booked twice, every open position is
handed back for a stop. (The daemon-level test, with the engine, belongs to the daemon.)"""

from __future__ import annotations

import os
import random
import signal
import time
import traceback

from serving.state.reconcile import reconcile

KILLS = 12


def _trade_until_killed(desk, seed: int) -> None:
    """A scripted trader: a restart, reconciliation, then quotes and a random action per quote."""
    run = desk.journal.begin_run(desk.now)
    report = reconcile(desk.journal, desk.broker, "resume", desk.now)
    for record in report.cancel_stale:
        desk.run(record)
    rng = random.Random(seed)
    mid, k = 100.0, 0
    while True:
        k += 1
        mid = round(mid + rng.choice((-0.01, 0.0, 0.01)), 2)
        desk.quote(mid - 0.01, mid + 0.01, rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0))
        cid = f"r{run}-{k}"
        action = rng.random()
        held = desk.broker.positions().get(desk.SYMBOL)
        working = desk.broker.open_orders()
        if action < 0.35:
            side = rng.choice((1, -1))
            desk.trade(desk.limit(cid, side, round(mid - side * 0.01, 2), qty=0.5))
        elif action < 0.5:
            desk.trade(desk.market(cid, rng.choice((1, -1)), qty=0.3))
        elif action < 0.65 and working:
            desk.trade(cancels=(rng.choice(working).client_id,))
        elif action < 0.8 and held is not None and not any(o.type == "stop" for o in working):
            side = -1 if held.qty > 0 else 1
            desk.trade(desk.stop(cid, side, round(mid - side * 0.5, 2), qty=abs(held.qty)))


def test_paper_trading_survives_random_kills(tmp_path, desk_class):
    rng = random.Random(11)
    errors = tmp_path / "child.err"
    sent_before: set[str] = set()
    for trial in range(KILLS):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read)
                desk = desk_class(tmp_path, latency_ms=3.0)
                os.write(write, b"x")
                _trade_until_killed(desk, trial)
            except BaseException:
                errors.write_text(traceback.format_exc())
            finally:
                os._exit(1)
        os.close(write)
        os.read(read, 1)
        os.close(read)
        time.sleep(rng.uniform(0.005, 0.06))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), errors.read_text() if errors.exists() else "the child exited"

        desk = desk_class(tmp_path, latency_ms=3.0)
        journal, broker = desk.journal, desk.broker
        report = reconcile(journal, broker, "resume", desk.now)
        # no fill lost, none twice
        venue_fills = [f.fill_id for f in broker.fills_since(0)]
        journal_fills = [r[0] for r in journal._db.execute("SELECT fill_id FROM fills")]
        assert sorted(venue_fills) == sorted(journal_fills) and len(set(journal_fills)) == len(journal_fills)
        # every order in the same state on both sides; what the venue never got was not sent again
        venue_states = dict(broker._db.execute("SELECT client_id, state FROM orders").fetchall())
        for cid, state in journal._db.execute("SELECT client_id, state FROM orders"):
            if state == "unsent":
                assert cid not in venue_states
            else:
                assert {"pending": "sent"}.get(venue_states[cid], venue_states[cid]) == state, cid
        assert set(venue_states) - {r[0] for r in journal._db.execute("SELECT client_id FROM orders")} == set()
        assert not sent_before - set(venue_states)  # the venue forgets nothing either
        sent_before = set(venue_states)
        # positions agree, and each comes back for a stop
        positions = {s: tuple(p) for s, p in broker.positions().items()}
        assert {s: (p.qty, p.entry_px) for s, p in journal.open_positions().items()} == positions
        assert {p.symbol: (p.qty, p.entry_px) for p in report.needs_stop} == positions
        journal.close()
        broker.close()
    assert len(sent_before) > 3 * KILLS  # it traded between the kills
