"""Paper trading: the simulated venue as "the exchange", kept in its own SQLite file so that it
outlives a kill -9 of the daemon as an exchange would.

What is stored, one transaction per change that matters (``serving/state/db.py``: WAL, not
durable: a kill -9 loses nothing committed, a power loss may lose the last commits, as an exchange
may lose an order in flight; the restart's reconcile squares it with the journal):

- ``account``: the venue's whole state as JSON (``venue_snapshot.py``), replaced at each change;
- ``orders``: every order ever received, by client id, with its state (pending: in flight, working,
  filled, cancelled, rejected, expired) and filled quantity: what ``lookup`` answers from;
- ``fills``: every execution, with its id (``<client_id>:<n>``, the n-th fill of that order);
- ``venue_events``: funding payments and liquidations, for the record.

A change that matters: an order or cancel sent, any event the venue produced (fills, order updates,
funding, liquidations), an order arriving at the venue (it starts working with no event). Market
data is not logged: the market goes on without us, and after a restart the venue sees it again from
the feed. Between changes the queue positions of resting orders move with the market; they are saved
at most ``snapshot_every_ns`` of event time apart, so a crash can leave an order's queue position
that much behind (never ahead: a queue only shrinks).

The venue is in the daemon's process, so a kill -9 takes "the exchange" down with it, at a point
where its last commit is the truth: anything after it never happened, at the venue as in the
journal. The order of writes the daemon relies on: the broker commits before it returns the events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from serving.brokers.base import (
    CANCELLED, EXPIRED, FILLED, PENDING, REJECTED, WORKING, BrokerError, HeldPosition, MarketEvent, OrderStatus,
    VenueEvent,
)  # fmt: skip
from serving.brokers.venue_snapshot import restore, snapshot
from serving.events import (
    DecisionRecord, Depth, Fill, FundingPayment, Liquidation, MarketLimits, Order, OrderDone, Quote, Trade,
)  # fmt: skip
from serving.state.db import connect, transaction
from serving.venues.config import VenueConfig
from serving.venues.simulated import AccountSummary, SimulatedVenue

NS_PER_S = 1_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS account (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    identity TEXT NOT NULL,  -- the venue configuration and markets this account was opened with
    snapshot TEXT NOT NULL,  -- JSON of venue_snapshot.snapshot()
    ts_ns INTEGER NOT NULL,  -- event time of the snapshot
    saves INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    client_id TEXT PRIMARY KEY,
    symbol TEXT NOT NULL,
    order_json TEXT NOT NULL,
    state TEXT NOT NULL,
    filled_qty REAL NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    sent_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_open ON orders(state) WHERE state IN ('pending', 'working');
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY,
    fill_id TEXT NOT NULL UNIQUE,
    client_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    price REAL NOT NULL,
    qty REAL NOT NULL,
    side INTEGER NOT NULL,
    fee_usdt REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS fills_by_order ON fills(client_id);
CREATE INDEX IF NOT EXISTS fills_by_time ON fills(ts_ns);
CREATE TABLE IF NOT EXISTS venue_events (
    id INTEGER PRIMARY KEY,
    ts_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    event TEXT NOT NULL
)
"""
_FILL_COLUMNS = "symbol, ts_ns, client_id, price, qty, side, fee_usdt, fill_id"


class DuplicateClientIdError(BrokerError):
    """An order with a client id the venue has already received."""


class PaperBroker:
    """A ``Broker`` on a ``SimulatedVenue`` persisted at ``path``. Opening an existing file restores
    the account (``balance_usdt`` is then ignored); it must have been opened with the same venue
    configuration and markets.

    The venue acts when it is called: ``submit`` and ``on_market`` return what happened; ``poll``
    moves its clock on (orders arriving after their latency, scheduled funding) when no market data
    comes. After a restart its last quote is from before the crash: give it a fresh quote of each
    symbol (``on_market``) before sending anything that would trade at once."""

    def __init__(self, path: str | Path, config: VenueConfig, markets: Sequence[MarketLimits], balance_usdt: float,
                 snapshot_every_ns: int = NS_PER_S, durable: bool = False) -> None:  # fmt: skip
        self.path = Path(path)
        self.venue = SimulatedVenue(config, markets, balance_usdt)
        self._snapshot_every_ns = snapshot_every_ns
        self._db = connect(self.path, _SCHEMA, durable)  # durable: fsync each commit (bench/latency.py)
        identity = json.dumps({"config": config.model_dump(mode="json"), "markets": [list(m) for m in markets]},
                              sort_keys=True)  # fmt: skip
        row = self._db.execute("SELECT identity, snapshot, ts_ns FROM account WHERE id = 1").fetchone()
        if row is None:
            self._saved_ns = self.venue.now
            with transaction(self._db) as db:
                db.execute("INSERT INTO account (id, identity, snapshot, ts_ns, saves) VALUES (1, ?, ?, ?, 1)",
                           (identity, json.dumps(snapshot(self.venue)), self.venue.now))  # fmt: skip
        else:
            if row[0] != identity:
                self._db.close()
                raise BrokerError(
                    f"{self.path}: this paper account was opened with another venue configuration or other markets; "
                    "open it with those, or start a new account at another path"
                )
            restore(self.venue, json.loads(row[1]))
            self._saved_ns = row[2]
        # The orders the venue may still act on, and their state and fill count (for fill ids).
        self._open: dict[str, str] = {}
        self._fill_count: dict[str, int] = {}
        rows = self._db.execute(
            "SELECT o.client_id, o.state, (SELECT COUNT(*) FROM fills f WHERE f.client_id = o.client_id) "
            "FROM orders o WHERE o.state IN (?, ?)",
            (PENDING, WORKING),
        ).fetchall()
        for cid, state, fills in rows:
            self._open[cid], self._fill_count[cid] = state, fills
        self._broken = False

    # ---- the Broker protocol ------------------------------------------------------------------

    def submit(self, record: DecisionRecord, ts_ns: int) -> list[VenueEvent]:
        self._check()
        if not (record.orders or record.cancels):
            return []
        if record.orders:
            known = self._known([o.client_id for o in record.orders])
            if known:  # as an exchange refuses a client id it has seen: an order never executes twice
                raise DuplicateClientIdError(
                    f"client ids already sent to the paper venue: {', '.join(sorted(known))}; nothing of this "
                    "decision was sent"
                )
        events = list(self.venue.submit(record, ts_ns))
        return self._commit(events, ts_ns, record.orders)

    def poll(self, ts_ns: int) -> list[VenueEvent]:
        self._check()
        pending = len(self.venue._inbox)
        events = list(self.venue.advance(ts_ns))
        return self._commit_if_changed(events, ts_ns, pending)

    def on_market(self, event: MarketEvent) -> list[VenueEvent]:
        self._check()
        venue = self.venue
        pending = len(venue._inbox)
        kind = type(event)
        if kind is Quote:
            events = venue.on_quote(event)
        elif kind is Trade:
            events = venue.on_trade(event)
        elif kind is Depth:
            events = venue.on_depth(event)
        else:
            raise TypeError(f"not a market event: {event!r}")
        return self._commit_if_changed(list(events), event.ts_ns, pending)

    def lookup(self, client_id: str) -> OrderStatus | None:
        row = self._db.execute("SELECT order_json, state, filled_qty, reason FROM orders WHERE client_id = ?",
                               (client_id,)).fetchone()  # fmt: skip
        if row is None:
            return None
        fills = self._db.execute(f"SELECT {_FILL_COLUMNS} FROM fills WHERE client_id = ? ORDER BY id", (client_id,))
        return OrderStatus(Order(*json.loads(row[0])), row[1], row[2], row[3], tuple(Fill(*f) for f in fills))

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        pending = [o for message in self.venue._inbox for o in message[4] if symbol is None or o.symbol == symbol]
        return self.venue.working(symbol) + pending

    def positions(self) -> dict[str, HeldPosition]:
        held = {}
        for symbol in self.venue._books:
            p = self.venue.position(symbol)
            if p.qty != 0.0:
                held[symbol] = HeldPosition(p.qty, p.entry_px)
        return held

    def fills_since(self, ts_ns: int) -> list[Fill]:
        rows = self._db.execute(f"SELECT {_FILL_COLUMNS} FROM fills WHERE ts_ns >= ? ORDER BY id", (ts_ns,))
        return [Fill(*row) for row in rows]

    def wallet_usdt(self) -> float:
        return self.venue.wallet_usdt

    def close(self) -> None:
        if self._db is None:
            return
        if not self._broken:
            self._save(self.venue.now)
        self._db.close()
        self._db = None

    # ---- beyond the protocol ------------------------------------------------------------------

    def account(self) -> AccountSummary:
        return self.venue.account()

    # ---- persistence --------------------------------------------------------------------------

    def _commit_if_changed(self, events: list, ts_ns: int, pending_before: int) -> list[VenueEvent]:
        # An order arriving at the venue changes its state with no event: the inbox got shorter.
        if events or len(self.venue._inbox) != pending_before:
            return self._commit(events, ts_ns, ())
        if ts_ns - self._saved_ns >= self._snapshot_every_ns:  # queue positions moved with the market
            self._save(ts_ns)
        return events

    def _commit(self, events: list, ts_ns: int, sent: Sequence[Order]) -> list[VenueEvent]:
        """Book what happened and save the venue, in one transaction; returns the events with their
        fill ids."""
        out = []
        try:
            with transaction(self._db) as db:
                for order in sent:
                    db.execute(
                        "INSERT INTO orders (client_id, symbol, order_json, state, sent_ns, updated_ns) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (order.client_id, order.symbol, json.dumps(list(order)), PENDING, ts_ns, ts_ns),
                    )
                    self._open[order.client_id] = PENDING
                    self._fill_count[order.client_id] = 0
                ended: dict[str, str] = {}
                for event in events:
                    kind = type(event)
                    if kind is Fill:
                        event = self._book_fill(db, event)
                    elif kind is OrderDone:
                        ended[event.client_id] = event.reason
                        db.execute(
                            "UPDATE orders SET state = ?, reason = ?, updated_ns = ? WHERE client_id = ?",
                            (_final_state(event.reason), event.reason, event.ts_ns, event.client_id),
                        )
                    elif kind is FundingPayment or kind is Liquidation:
                        db.execute("INSERT INTO venue_events (ts_ns, kind, event) VALUES (?, ?, ?)",
                                   (event.ts_ns, kind.__name__, json.dumps(event._asdict())))  # fmt: skip
                    out.append(event)
                self._update_states(db, ended, ts_ns)
                self._save_in(db, ts_ns)
        except Exception as error:
            # The venue in memory has moved on and the file has not: the two must not be used apart.
            self._broken = True
            raise BrokerError(f"{self.path}: could not save the paper venue ({error}); reopen the broker") from error
        return out

    def _book_fill(self, db, fill: Fill) -> Fill:
        n = self._fill_count.get(fill.client_id, 0) + 1
        self._fill_count[fill.client_id] = n
        fill = fill._replace(fill_id=f"{fill.client_id}:{n}")
        db.execute(f"INSERT INTO fills ({_FILL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", fill)
        db.execute("UPDATE orders SET filled_qty = filled_qty + ?, updated_ns = ? WHERE client_id = ?",
                   (fill.qty, fill.ts_ns, fill.client_id))  # fmt: skip
        return fill

    def _update_states(self, db, ended: dict[str, str], ts_ns: int) -> None:
        """Open orders move on: pending -> working on arrival; a final state from an OrderDone, or
        filled when an order left the venue without one."""
        in_flight = {o.client_id for message in self.venue._inbox for o in message[4]}
        working = self.venue._working
        for cid, old in list(self._open.items()):
            if cid in in_flight:
                continue
            if cid in working:
                if old != WORKING:
                    db.execute("UPDATE orders SET state = ?, updated_ns = ? WHERE client_id = ?", (WORKING, ts_ns, cid))
                    self._open[cid] = WORKING
                continue
            if cid not in ended:
                db.execute("UPDATE orders SET state = ?, updated_ns = ? WHERE client_id = ?", (FILLED, ts_ns, cid))
            del self._open[cid]
            self._fill_count.pop(cid, None)

    def _save(self, ts_ns: int) -> None:
        try:
            with transaction(self._db) as db:
                self._save_in(db, ts_ns)
        except Exception as error:
            self._broken = True
            raise BrokerError(f"{self.path}: could not save the paper venue ({error}); reopen the broker") from error

    def _save_in(self, db, ts_ns: int) -> None:
        db.execute("UPDATE account SET snapshot = ?, ts_ns = ?, saves = saves + 1 WHERE id = 1",
                   (json.dumps(snapshot(self.venue)), ts_ns))  # fmt: skip
        self._saved_ns = ts_ns

    def _known(self, client_ids: list[str]) -> set[str]:
        marks = ", ".join("?" * len(client_ids))
        rows = self._db.execute(f"SELECT client_id FROM orders WHERE client_id IN ({marks})", client_ids)
        return {row[0] for row in rows}

    def _check(self) -> None:
        if self._db is None:
            raise BrokerError(f"{self.path}: the paper broker is closed")
        if self._broken:
            raise BrokerError(f"{self.path}: the paper venue failed to save earlier; reopen the broker")


def _final_state(reason: str) -> str:
    return reason if reason in (CANCELLED, REJECTED, EXPIRED) else CANCELLED
