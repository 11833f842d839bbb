"""On restart: make the journal agree with the venue, which is the truth, and say what the daemon
must do about the positions (``on_restart: resume | flatten``).

1. Every order the journal left open (intent, sent, working) is looked up by client id. Unknown to
   the venue: it never got there; it is marked ``unsent`` and never sent again (the engine decides
   afresh). Known: its fills the journal lacks are booked (each once: fills are keyed by their id)
   and its state is the venue's.
2. Fills since the journal's last one are booked when missing (a liquidation's, any other).
3. Positions: the venue's are written to the journal; differences are reported.
4. Policy. ``resume``: every open position needs a protective stop from the new engine
   (``needs_stop``; ``engine_fills`` hands the positions to it), and the venue's open orders are
   stale (the new engine knows none of them): ``cancel_stale`` cancels them once the new stops
   work. ``flatten``: ``flatten`` holds, per symbol, one message that cancels its open orders and
   closes its position with a reduce-only market order.

A live venue may not show an order that is still in flight: reconcile a live account only after the
longest order latency has passed since the crash (the paper venue keeps in-flight messages and
answers ``pending``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

from serving.brokers.base import Broker, HeldPosition
from serving.events import MARKET, Cancel, DecisionRecord, Fill, Order
from serving.state.journal import UNSENT, Journal, JournalPosition

Policy = Literal["resume", "flatten"]
POLICIES = ("resume", "flatten")
_QTY_TOLERANCE = 1e-12
_PRICE_TOLERANCE = 1e-9  # relative


class RestoredPosition(NamedTuple):
    """A position at the venue after a restart; ``stop_px`` is the journal's last stop for it (NaN:
    none known), for the record: the new engine sets its own."""

    symbol: str
    qty: float
    entry_px: float
    stop_px: float


@dataclass(frozen=True)
class ReconcileReport:
    policy: str
    ts_ns: int
    unsent: tuple[Order, ...]  # never reached the venue: marked unsent, not sent again
    adopted: tuple[tuple[str, str], ...]  # (client_id, the venue's state) of orders the venue has
    fills_booked: tuple[Fill, ...]  # fills the journal lacked, now booked
    positions: tuple[RestoredPosition, ...]  # the venue's open positions, now the journal's
    position_diffs: tuple[str, ...]  # where the journal's positions differed from the venue's
    needs_stop: tuple[RestoredPosition, ...]  # resume: positions the new engine must protect
    flatten: tuple[DecisionRecord, ...]  # flatten: cancels + a reduce-only market close, per symbol
    cancel_stale: tuple[DecisionRecord, ...]  # resume: cancels of the venue's open orders, per symbol
    open_orders: tuple[Order, ...]  # what the venue holds or will act on
    unknown_orders: tuple[Order, ...]  # of those, what the journal never had
    wallet_usdt: float
    lines: tuple[str, ...]  # the report, for people (also written to the journal as a note)

    def __str__(self) -> str:
        return "\n".join(self.lines)

    def engine_fills(self) -> tuple[Fill, ...]:
        """One fill per open position (at its entry price, no fee, client id ``restore-<symbol>``),
        to give the positions to a new engine (``engine.on_fill``): it books them and arms their
        stops. For the engine only: these are not venue fills and must not be journaled."""
        return tuple(Fill(p.symbol, self.ts_ns, f"restore-{p.symbol}", p.entry_px, abs(p.qty), 1 if p.qty > 0.0 else -1,
                          0.0) for p in self.positions)  # fmt: skip


def reconcile(journal: Journal, broker: Broker, policy: Policy, ts_ns: int,
              client_id_prefix: str = "restart") -> ReconcileReport:  # fmt: skip
    """Bring the journal in line with the venue (module docstring); writes to the journal, sends
    nothing. ``client_id_prefix`` names the flatten orders (``<prefix>-<ts_ns>-<n>``)."""
    if policy not in POLICIES:
        raise ValueError(f"on_restart must be one of {POLICIES}, not {policy!r}")
    lines = [f"reconcile at {ts_ns} ns, on_restart: {policy}"]
    since = journal.last_fill_ns()
    unsent, adopted, booked = [], [], []

    for entry in journal.unresolved():
        cid = entry.order.client_id
        status = broker.lookup(cid)
        if status is None:
            journal.adopt(cid, UNSENT, ts_ns, "the venue never received it")
            unsent.append(entry.order)
            lines.append(f"{cid}: {entry.state} in the journal, unknown to the venue: never sent; not sent again")
            continue
        new = [f for f in status.fills if journal.fill(f)]
        booked += new
        journal.adopt(cid, status.state, ts_ns, status.reason)
        adopted.append((cid, status.state))
        lines.append(f"{cid}: {entry.state} in the journal, {status.state} at the venue (filled {status.filled_qty:g} "
                     f"of {status.order.qty:g}); {len(new)} fill(s) booked")  # fmt: skip
        journaled = sum(f.qty for f in journal.fills_for(cid))
        if abs(journaled - status.filled_qty) > _QTY_TOLERANCE * max(1.0, status.filled_qty):
            lines.append(f"{cid}: the journal has {journaled:g} filled, the venue {status.filled_qty:g}")

    for fill in broker.fills_since(since if since is not None else 0):
        if journal.fill(fill):
            booked.append(fill)
            known = journal.order(fill.client_id) is not None
            lines.append(f"fill {fill.fill_id or fill.client_id} booked ({fill.side:+d} {fill.qty:g} @ {fill.price:g})"
                         + ("" if known else ": no order of ours in the journal (a liquidation?)"))  # fmt: skip

    venue_positions = broker.positions()
    journal_positions = journal.open_positions()
    restored, diffs = [], []
    for symbol in sorted(set(venue_positions) | set(journal_positions)):
        held = venue_positions.get(symbol, HeldPosition(0.0, 0.0))
        believed = journal_positions.get(symbol)
        stop_px = believed.stop_px if believed is not None and (believed.qty > 0.0) == (held.qty > 0.0) else math.nan
        if not _same(held, believed):
            was = f"{believed.qty:+g} @ {believed.entry_px:g}" if believed is not None else "flat"
            diffs.append(f"{symbol}: journal {was}, venue {held.qty:+g} @ {held.entry_px:g}: the venue's taken")
        if not _same(held, believed):
            journal.position(symbol, held.qty, held.entry_px, stop_px, ts_ns)
        if held.qty != 0.0:
            restored.append(RestoredPosition(symbol, held.qty, held.entry_px, stop_px))
    lines += diffs

    open_orders = tuple(broker.open_orders())
    unknown = tuple(o for o in open_orders if journal.order(o.client_id) is None)
    for order in unknown:
        lines.append(f"{order.client_id}: open at the venue, unknown to the journal ({order.symbol} {order.type} "
                     f"{order.side:+d} {order.qty:g} @ {order.price:g})")  # fmt: skip

    flatten: tuple[DecisionRecord, ...] = ()
    cancel_stale: tuple[DecisionRecord, ...] = ()
    needs_stop: tuple[RestoredPosition, ...] = ()
    if policy == "flatten":
        flatten = tuple(_flatten_records(restored, open_orders, ts_ns, client_id_prefix))
        for p in restored:
            lines.append(f"{p.symbol}: {p.qty:+g} @ {p.entry_px:g}: to close with a reduce-only market order")
    else:
        needs_stop = tuple(restored)
        cancel_stale = tuple(_cancel_records(open_orders, ts_ns))
        for p in restored:
            stops = [o.client_id for o in open_orders if o.symbol == p.symbol and o.type == "stop" and o.reduce_only]
            old = f"; the old stop {', '.join(stops)} is cancelled once the new one works" if stops else ""
            lines.append(f"{p.symbol}: {p.qty:+g} @ {p.entry_px:g} resumed: the engine arms its stop{old}")
    if open_orders:
        lines.append(f"{len(open_orders)} order(s) open at the venue: "
                     f"{', '.join(o.client_id for o in open_orders)}; cancelled (" +
                     ("with the flatten orders)" if policy == "flatten" else "after the new stops)"))  # fmt: skip
    wallet = broker.wallet_usdt()
    lines.append(f"wallet {wallet:.2f} USDT; {len(unsent)} unsent, {len(adopted)} adopted, {len(booked)} fill(s) "
                 f"booked, {len(restored)} open position(s)")  # fmt: skip
    journal.note("reconcile", "\n".join(lines), ts_ns)
    return ReconcileReport(policy, ts_ns, tuple(unsent), tuple(adopted), tuple(booked), tuple(restored), tuple(diffs),
                           needs_stop, flatten, cancel_stale, open_orders, unknown, wallet, tuple(lines))  # fmt: skip


def _same(held: HeldPosition, believed: JournalPosition | None) -> bool:
    if believed is None:
        return held.qty == 0.0
    return (abs(held.qty - believed.qty) <= _QTY_TOLERANCE
            and abs(held.entry_px - believed.entry_px) <= _PRICE_TOLERANCE * max(abs(held.entry_px), 1.0))  # fmt: skip


def _flatten_records(positions, open_orders, ts_ns: int, prefix: str) -> list[DecisionRecord]:
    records = []
    symbols = sorted({p.symbol for p in positions} | {o.symbol for o in open_orders})
    by_symbol = {p.symbol: p for p in positions}
    for n, symbol in enumerate(symbols, 1):
        cancels = tuple(Cancel(o.client_id, symbol) for o in open_orders if o.symbol == symbol)
        p = by_symbol.get(symbol)
        orders = ()
        if p is not None:
            side = -1 if p.qty > 0.0 else 1
            orders = (Order(f"{prefix}-{ts_ns}-{n}", symbol, side, MARKET, 0.0, abs(p.qty), False, True, "risk"),)
        records.append(_record(symbol, ts_ns, cancels, orders, "restart: flatten"))
    return records


def _cancel_records(open_orders, ts_ns: int) -> list[DecisionRecord]:
    symbols = sorted({o.symbol for o in open_orders})
    return [_record(s, ts_ns, tuple(Cancel(o.client_id, s) for o in open_orders if o.symbol == s), (),
                    "restart: stale orders") for s in symbols]  # fmt: skip


def _record(symbol: str, ts_ns: int, cancels: tuple, orders: tuple, why: str) -> DecisionRecord:
    nan = math.nan
    return DecisionRecord(ts_ns, symbol, "control", (), (), nan, nan, False, "", "reconcile", nan, "reducing", why,
                          cancels, orders, (), (why,))  # fmt: skip
