"""A kill -9 at any point of a write leaves the journal whole: every transaction is there or absent.

A forked child writes the daemon's sequence of writes in a loop to one file; the parent kills it
after a random delay, checks the file, and starts the next child on the same file (which recovers
from the previous kill first). Fork, not a fresh interpreter: the child starts in a millisecond.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sqlite3
import time

from serving.events import Cancel, DecisionRecord, Fill, Order, OrderDone
from serving.state.journal import Journal

SYMBOL = "BTC/USDT:USDT"
T0 = 1_704_067_200_000_000_000
KILLS = 24
STEPS = 7  # writes per iteration, in _write_forever's order


def _write_forever(path) -> None:
    journal = Journal(path)
    i = journal._db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]  # go on after the last kill
    while True:
        a, b, t = f"c{i}a", f"c{i}b", T0 + i
        orders = tuple(Order(cid, SYMBOL, 1, "limit", 99.0, 1.0, True, False, "test") for cid in (a, b))
        cancels = (Cancel(f"c{i - 1}b", SYMBOL),) if i else ()
        journal.decision(DecisionRecord(t, SYMBOL, "tick", ("x",), (0.5,), 0.5, math.nan, True, "normal", "test",
                                        5.0, "active", "", cancels, orders, (), ()))  # fmt: skip
        journal.sent([a, b], t)
        journal.fill(Fill(SYMBOL, t, a, 99.0, 0.5, 1, 0.01, f"{a}:1"))
        journal.fill(Fill(SYMBOL, t, a, 99.0, 0.5, 1, 0.01, f"{a}:2"))
        journal.order_done(OrderDone(SYMBOL, t, b, "cancelled"))
        journal.position(f"S{i}", 1.0, 99.0, 98.0, t)  # a symbol each: this write of this iteration
        journal.note("note", str(i), t)
        i += 1


def _steps_done(db: sqlite3.Connection, i: int) -> int:
    """How many of iteration i's writes are in the file, checking that each implies the ones before."""
    a, b = f"c{i}a", f"c{i}b"
    state = dict(db.execute("SELECT client_id, state FROM orders WHERE client_id IN (?, ?)", (a, b)).fetchall())
    fills = db.execute("SELECT COUNT(*) FROM fills WHERE client_id = ?", (a,)).fetchone()[0]
    position = db.execute("SELECT qty FROM positions WHERE symbol = ?", (f"S{i}",)).fetchone()
    noted = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'note' AND text = ?", (str(i),)).fetchone()[0]
    done = [
        len(state) == 2,
        state.get(a) in ("sent", "working", "filled") and state.get(b) in ("sent", "cancelled"),
        fills >= 1,
        fills == 2,
        state.get(b) == "cancelled",
        position is not None,
        noted == 1,
    ]
    k = done.index(False) if False in done else STEPS
    assert not any(done[k:]), f"iteration {i}: write {done.index(True, k) + 1} without write {k + 1}: {done}"
    return k


def _check(path, interrupted: set[int]) -> int:
    """Checks the file; returns the number of iterations begun. ``interrupted``: the last iteration
    of each earlier writer, which a kill may have left incomplete for good."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:  # killed before the schema's transaction committed
            return 0
        assert tables == {"decisions", "orders", "fills", "positions", "events"}  # the schema is one write too
        # a decision and its intents are one write; a fill and its order's filled quantity too
        assert db.execute("SELECT COUNT(*) FROM decisions d WHERE (SELECT COUNT(*) FROM orders o "
                          "WHERE o.decision_id = d.id) != 2").fetchone()[0] == 0  # fmt: skip
        assert db.execute("SELECT COUNT(*) FROM orders o WHERE ABS(o.filled_qty - COALESCE((SELECT SUM(qty) "
                          "FROM fills f WHERE f.client_id = o.client_id), 0)) > 1e-12").fetchone()[0] == 0  # fmt: skip
        n = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
        for i in range(n):
            k = _steps_done(db, i)
            assert k == STEPS or i == n - 1 or i in interrupted, f"iteration {i} of {n} incomplete ({k} writes)"
        return n
    finally:
        db.close()


def test_a_kill_at_any_point_leaves_every_write_whole(tmp_path):
    path = tmp_path / "journal.db"
    rng = random.Random(7)
    seen = []
    for trial in range(KILLS):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            try:
                os.close(read)
                os.write(write, b"x")
                _write_forever(path)
            finally:
                os._exit(1)
        os.close(write)
        os.read(read, 1)
        os.close(read)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"trial {trial}: the writer died early"
        seen.append(_check(path, {n - 1 for n in seen}))
    assert seen == sorted(seen) and seen[-1] > KILLS  # it got on with writing between kills
    journal = Journal(path)  # and the file is still a journal one can write to
    assert journal.begin_run(T0) == 1
    assert all(entry.state in ("intent", "sent", "working") for entry in journal.unresolved())
