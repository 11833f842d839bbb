"""The daemon's journal: every decision, order, fill and position, on SQLite, written before and
after each call to the broker, so that a restart knows what may be out at the venue.

The write-ahead rule: an order's intent is committed before the order is sent (``decision`` or
``intent``), and marked ``sent`` once the broker call returned. A crash between the two leaves an
order in ``intent`` that may or may not have reached the venue; ``serving/state/reconcile.py``
asks the venue by client id and never sends it again.

Order states::

    intent -> sent -> working -> filled | cancelled | rejected | expired
       \\-------\\----> unsent      (reconcile: the venue never received it; final, never re-sent)

A fill or an ``OrderDone`` proves the venue had the order, so either moves it on from any state
that is not final (``unsent`` included). Fills are keyed by ``Fill.fill_id`` (the venue's id), or
by their content when the venue gives none, so a fill booked twice is booked once.

Every public write is one transaction (``serving/state/db.py``: WAL; synchronous FULL when
``durable``, as a live daemon opens it, NORMAL for paper trading); a kill -9 at any point leaves
each of them whole or absent. One writer: the daemon's event loop.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Iterable, NamedTuple

from pipeline.errors import AutoscalpError
from serving.brokers.base import CANCELLED, EXPIRED, FILLED, PENDING, REJECTED, WORKING
from serving.events import DecisionRecord, Fill, Order, OrderDone
from serving.state.db import connect, transaction

INTENT, SENT, UNSENT = "intent", "sent", "unsent"
OPEN_STATES = (INTENT, SENT, WORKING)
DONE_STATES = (FILLED, CANCELLED, REJECTED, EXPIRED, UNSENT)
STATES = OPEN_STATES + DONE_STATES
_FILLED_TOLERANCE = 1e-9  # relative: partial fills that sum to the order's size in floating point

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    ts_ns INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    event TEXT NOT NULL,
    record TEXT NOT NULL  -- JSON of DecisionRecord.to_dict() (NaN written as NaN)
);
CREATE TABLE IF NOT EXISTS orders (
    client_id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    side INTEGER NOT NULL,
    type TEXT NOT NULL,
    price REAL NOT NULL,
    qty REAL NOT NULL,
    post_only INTEGER NOT NULL,
    reduce_only INTEGER NOT NULL,
    tag TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ({", ".join(repr(s) for s in STATES)})),
    filled_qty REAL NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    decision_id INTEGER REFERENCES decisions(id),
    intent_ns INTEGER NOT NULL,
    sent_ns INTEGER,
    cancel_ns INTEGER,  -- when we asked to cancel it
    done_ns INTEGER
);
CREATE INDEX IF NOT EXISTS orders_open ON orders(state) WHERE state IN ('intent', 'sent', 'working');
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY,  -- booking order
    fill_key TEXT NOT NULL UNIQUE,
    fill_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    price REAL NOT NULL,
    qty REAL NOT NULL,
    side INTEGER NOT NULL,
    fee_usdt REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS fills_by_order ON fills(client_id);
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT PRIMARY KEY,
    qty REAL NOT NULL,
    entry_px REAL NOT NULL,
    stop_px REAL,  -- NULL: none known (SQLite stores NaN as NULL)
    ts_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,  -- restart, kill_switch, model_swap, reconcile, note, ...
    text TEXT NOT NULL
)
"""

_ORDER_COLUMNS = "client_id, symbol, side, type, price, qty, post_only, reduce_only, tag"
_ROW_COLUMNS = _ORDER_COLUMNS + ", state, filled_qty, reason, intent_ns, sent_ns, cancel_ns, done_ns"
_FILL_COLUMNS = "symbol, ts_ns, client_id, price, qty, side, fee_usdt, fill_id"


class DuplicateOrderError(AutoscalpError):
    """An intent for a client id the journal already has: sending it would send an order twice."""


class JournalOrder(NamedTuple):
    order: Order
    state: str
    filled_qty: float
    reason: str
    intent_ns: int
    sent_ns: int | None
    cancel_ns: int | None
    done_ns: int | None


class JournalPosition(NamedTuple):
    """A position as the engine last believed it; ``stop_px`` NaN when it had none."""

    qty: float
    entry_px: float
    stop_px: float
    ts_ns: int


def fill_key(fill: Fill) -> str:
    """The fill's identity: the venue's id, else its content (then two identical fills of one order
    at the same ns would count once: only a venue without fill ids can do that to us)."""
    if fill.fill_id:
        return fill.fill_id
    return f"{fill.client_id}|{fill.ts_ns}|{fill.price!r}|{fill.qty!r}|{fill.side}|{fill.fee_usdt!r}"


class Journal:
    def __init__(self, path: str | Path, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable
        self._db = connect(self.path, _SCHEMA, durable)

    def close(self) -> None:
        self._db.close()

    # ---- writes: one transaction each ---------------------------------------------------------

    def begin_run(self, ts_ns: int) -> int:
        """Note a (re)start; returns its number (1 for the first). Client ids must differ between
        runs (the engine counts from 1 again): e.g. ``client_id_prefix = f"as{run}"``."""
        with transaction(self._db) as db:
            run = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'restart'").fetchone()[0] + 1
            self._note(db, "restart", f"run {run}", ts_ns)
        return run

    def decision(self, record: DecisionRecord) -> int:
        """Before sending: the record, the intent of each of its orders and the time we asked for
        each cancel, together. Returns the decision's id."""
        with transaction(self._db) as db:
            cursor = db.execute(
                "INSERT INTO decisions (ts_ns, symbol, event, record) VALUES (?, ?, ?, ?)",
                (record.ts_ns, record.symbol, record.event, json.dumps(record.to_dict())),
            )
            decision_id = cursor.lastrowid
            for order in record.orders:
                self._intent(db, order, record.ts_ns, decision_id)
            for cancel in record.cancels:
                db.execute("UPDATE orders SET cancel_ns = ? WHERE client_id = ? AND cancel_ns IS NULL",
                           (record.ts_ns, cancel.client_id))  # fmt: skip
        return decision_id

    def intent(self, order: Order, ts_ns: int) -> None:
        """Before sending an order that has no decision record."""
        with transaction(self._db) as db:
            self._intent(db, order, ts_ns, None)

    def sent(self, client_ids: Iterable[str], ts_ns: int) -> None:
        """After the broker call returned: these orders left us."""
        with transaction(self._db) as db:
            db.executemany("UPDATE orders SET state = 'sent', sent_ns = ? WHERE client_id = ? AND state = 'intent'",
                           [(ts_ns, cid) for cid in client_ids])  # fmt: skip

    def order_done(self, done: OrderDone) -> bool:
        """The venue ended an order; False when it was already final or is unknown."""
        state = done.reason if done.reason in (CANCELLED, REJECTED, EXPIRED) else CANCELLED
        with transaction(self._db) as db:
            cursor = db.execute(
                "UPDATE orders SET state = ?, reason = ?, done_ns = ? WHERE client_id = ? AND state IN (?, ?, ?, ?)",
                (state, done.reason, done.ts_ns, done.client_id, INTENT, SENT, WORKING, UNSENT),
            )
        return cursor.rowcount == 1

    def fill(self, fill: Fill) -> bool:
        """Book a fill; False when it is already booked. A fill of an order the journal does not
        know (a liquidation) is booked all the same."""
        with transaction(self._db) as db:
            cursor = db.execute(
                f"INSERT OR IGNORE INTO fills (fill_key, {_FILL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (fill_key(fill), fill.symbol, fill.ts_ns, fill.client_id, fill.price, fill.qty, fill.side,
                 fill.fee_usdt, fill.fill_id),
            )  # fmt: skip
            if cursor.rowcount == 0:
                return False
            # Expressions on the right read the row as it was before this update.
            db.execute(
                """UPDATE orders SET
                       filled_qty = filled_qty + :qty,
                       state = CASE WHEN state IN ('filled', 'cancelled', 'rejected', 'expired') THEN state
                                    WHEN filled_qty + :qty >= qty * (1.0 - :tol) THEN 'filled'
                                    ELSE 'working' END,
                       done_ns = CASE WHEN state NOT IN ('filled', 'cancelled', 'rejected', 'expired')
                                       AND filled_qty + :qty >= qty * (1.0 - :tol) THEN :ts ELSE done_ns END
                   WHERE client_id = :cid""",
                {"qty": fill.qty, "tol": _FILLED_TOLERANCE, "ts": fill.ts_ns, "cid": fill.client_id},
            )
        return True

    def position(self, symbol: str, qty: float, entry_px: float, stop_px: float, ts_ns: int) -> None:
        """The position as the engine now believes it (flat: qty 0)."""
        with transaction(self._db) as db:
            db.execute(
                "INSERT OR REPLACE INTO positions (symbol, qty, entry_px, stop_px, ts_ns) VALUES (?, ?, ?, ?, ?)",
                (symbol, qty, entry_px, None if math.isnan(stop_px) else stop_px, ts_ns),
            )

    def adopt(self, client_id: str, state: str, ts_ns: int, reason: str = "") -> None:
        """Reconciliation: take the venue's state of an order (a venue's ``pending`` is ``sent``),
        or ``unsent`` for one the venue never received."""
        state = SENT if state == PENDING else state
        if state not in STATES:
            raise ValueError(f"unknown order state {state!r}")
        done_ns = ts_ns if state in DONE_STATES else None
        with transaction(self._db) as db:
            db.execute("UPDATE orders SET state = ?, reason = ?, done_ns = COALESCE(done_ns, ?) WHERE client_id = ?",
                       (state, reason, done_ns, client_id))  # fmt: skip

    def note(self, kind: str, text: str, ts_ns: int) -> None:
        """Kill-switch changes, model swaps, reconciliation findings, operator actions."""
        with transaction(self._db) as db:
            self._note(db, kind, text, ts_ns)

    # ---- queries ------------------------------------------------------------------------------

    def order(self, client_id: str) -> JournalOrder | None:
        row = self._db.execute(f"SELECT {_ROW_COLUMNS} FROM orders WHERE client_id = ?", (client_id,)).fetchone()
        return _journal_order(row) if row is not None else None

    def unresolved(self) -> list[JournalOrder]:
        """Orders that may be at the venue: intent, sent or working, oldest intent first."""
        rows = self._db.execute(
            f"SELECT {_ROW_COLUMNS} FROM orders WHERE state IN (?, ?, ?) ORDER BY intent_ns, rowid", OPEN_STATES
        ).fetchall()
        return [_journal_order(row) for row in rows]

    def open_positions(self) -> dict[str, JournalPosition]:
        rows = self._db.execute("SELECT symbol, qty, entry_px, stop_px, ts_ns FROM positions WHERE qty != 0").fetchall()
        return {s: JournalPosition(q, e, math.nan if stop is None else stop, t) for s, q, e, stop, t in rows}

    def fills_for(self, client_id: str) -> list[Fill]:
        rows = self._db.execute(f"SELECT {_FILL_COLUMNS} FROM fills WHERE client_id = ? ORDER BY id", (client_id,))
        return [Fill(*row) for row in rows]

    def last_fill_ns(self) -> int | None:
        """The time of the latest fill booked (None: none yet)."""
        return self._db.execute("SELECT MAX(ts_ns) FROM fills").fetchone()[0]

    def notes(self, kind: str | None = None) -> list[tuple[int, str, str]]:
        """(ts_ns, kind, text), oldest first."""
        if kind is None:
            return self._db.execute("SELECT ts_ns, kind, text FROM events ORDER BY id").fetchall()
        return self._db.execute("SELECT ts_ns, kind, text FROM events WHERE kind = ? ORDER BY id", (kind,)).fetchall()

    def decisions(self, limit: int = 100) -> list[dict]:
        """The latest decision records (as ``DecisionRecord.to_dict()``), oldest first."""
        rows = self._db.execute("SELECT record FROM decisions ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [json.loads(row[0]) for row in reversed(rows)]

    # ---- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _intent(db: sqlite3.Connection, order: Order, ts_ns: int, decision_id: int | None) -> None:
        try:
            db.execute(
                f"INSERT INTO orders ({_ORDER_COLUMNS}, state, decision_id, intent_ns) VALUES ({', '.join('?' * 12)})",
                (*order, INTENT, decision_id, ts_ns),
            )
        except sqlite3.IntegrityError as error:
            if "UNIQUE" not in str(error):
                raise
            raise DuplicateOrderError(
                f"client id {order.client_id!r} is already in the journal: not sending it again (client ids must "
                "be unique across runs: see Journal.begin_run)"
            ) from None

    @staticmethod
    def _note(db: sqlite3.Connection, kind: str, text: str, ts_ns: int) -> None:
        db.execute("INSERT INTO events (ts_ns, kind, text) VALUES (?, ?, ?)", (ts_ns, kind, text))


def _journal_order(row: tuple) -> JournalOrder:
    cid, symbol, side, kind, price, qty, post_only, reduce_only, tag, *rest = row
    order = Order(cid, symbol, side, kind, price, qty, bool(post_only), bool(reduce_only), tag)
    return JournalOrder(order, *rest)
