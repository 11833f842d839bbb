"""A Binance depth stream kept in sequence: raw diffs in, the messages a local book needs out.

Binance's "how to manage a local order book correctly" (futures / spot):

1. open the diff stream and buffer its messages;
2. fetch a REST snapshot (``lastUpdateId`` L);
3. drop buffered diffs with u < L (spot: u <= L);
4. the first diff applied must straddle the snapshot: U <= L <= u (spot: U <= L + 1 <= u);
5. after it each diff must chain: pu == the previous u (spot, which has no pu: U == previous u + 1);
   if one does not, the book is wrong: start again from 2.

``DepthSync`` does this for one symbol and emits what a downstream book needs: the snapshot,
then the diffs from the straddling one on, as received. At a gap it emits the diff that breaks
the chain anyway (the feature engine's L2 book then invalidates itself, exactly as when the batch
path replays a stored gap), reports ``gap``, buffers again and asks for a snapshot
(``wants_snapshot``); once a diff straddles the new snapshot it reports ``resynced``. A diff that
repeats an applied one (u <= the previous u) is dropped and counted. A snapshot is taken only while
one is wanted; one older than every buffered diff (U > L) is a gap as well.

The feed turns ccxt's parsed REST snapshot and the raw diff messages into ``DepthEvent``s
(``snapshot_event``, ``diff_event``); this module keeps no state about the connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.data.sources.exchange.convert import base_qty, ms_to_ns
from pipeline.features.l2book import NO_ID, DepthUpdate
from serving.feeds.base import GAP, RESYNCED, DepthEvent

AWAIT, PENDING, SYNCED = "await_snapshot", "pending", "synced"


def _levels(
    bids: Sequence[Any], asks: Sequence[Any], market: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sides, prices, qtys = [], [], []
    for side, levels in ((1, bids), (-1, asks)):
        for level in levels:
            price = float(level[0])
            sides.append(side)
            prices.append(price)
            qtys.append(base_qty(market, level[1], price))
    return np.array(sides, dtype=np.int8), np.array(prices, dtype=np.float64), np.array(qtys, dtype=np.float64)


def diff_event(symbol: str, message: Mapping[str, Any], market: Mapping[str, Any], recv_ns: int) -> DepthEvent:
    """A raw ``depthUpdate`` message as a diff. Its time is the transaction time ``T`` (futures),
    else the event time ``E``, as the files source stores it."""
    ts_ns = ms_to_ns(message.get("T", message.get("E")))
    ts_ns = recv_ns if ts_ns is None else ts_ns
    side, price, qty = _levels(message.get("b") or (), message.get("a") or (), market)
    prev = message.get("pu")
    update = DepthUpdate(ts_ns, int(message["u"]), False, side, price, qty, int(message["U"]),
                         NO_ID if prev is None else int(prev))  # fmt: skip
    return DepthEvent(symbol, ts_ns, update)


def snapshot_event(symbol: str, book: Mapping[str, Any], market: Mapping[str, Any], recv_ns: int) -> DepthEvent:
    """ccxt's parsed REST order book (``nonce`` = lastUpdateId, ``timestamp`` = T) as a snapshot."""
    ts_ns = ms_to_ns(book.get("timestamp"))
    ts_ns = recv_ns if ts_ns is None else ts_ns
    side, price, qty = _levels(book.get("bids") or (), book.get("asks") or (), market)
    update = DepthUpdate(ts_ns, int(book["nonce"]), True, side, price, qty)
    return DepthEvent(symbol, ts_ns, update)


class DepthSync:
    """One symbol's diff stream in sequence (see module doc). ``emit`` gets the depth events,
    ``status`` (state, detail) the gaps and resyncs; ``counters`` are the feed's."""

    def __init__(
        self,
        symbol: str,
        emit: Callable[[DepthEvent], Any],
        status: Callable[[str, str], Any],
        counters: dict[str, int],
        max_buffered: int = 10_000,
    ) -> None:
        self.symbol = symbol
        self._emit = emit
        self._status = status
        self.counters = counters
        self.state = AWAIT
        self.last_id = NO_ID  # the snapshot's id while pending, the last applied u once synced
        self.buffered: deque[DepthEvent] = deque(maxlen=max_buffered)
        self.synced_once = False

    @property
    def wants_snapshot(self) -> bool:
        return self.state == AWAIT

    def on_diff(self, event: DepthEvent) -> None:
        if self.state == AWAIT:
            if len(self.buffered) == self.buffered.maxlen:
                self.counters["filtered"] += 1  # the oldest goes: a late snapshot will not straddle it anyway
            self.buffered.append(event)
        elif self.state == PENDING:
            self._pending(event)
        else:
            self._synced(event)

    def on_snapshot(self, event: DepthEvent) -> bool:
        """Take a snapshot if one is wanted (True), then the buffered diffs."""
        if self.state != AWAIT:
            return False
        self._emit(event)
        self.state, self.last_id = PENDING, event.update.update_id
        buffered, self.buffered = list(self.buffered), deque(maxlen=self.buffered.maxlen)
        for diff in buffered:
            self.on_diff(diff)
        return True

    def lost(self, reason: str) -> None:
        """The stream was interrupted (a reconnect): diffs were missed, a snapshot is needed."""
        if self.state == SYNCED:
            self._gap(reason)
        self.state = AWAIT
        self.buffered.clear()

    def _pending(self, event: DepthEvent) -> None:
        u = event.update
        futures = u.prev_update_id != NO_ID
        snapshot_id = self.last_id
        if u.update_id < snapshot_id or (not futures and u.update_id == snapshot_id):
            return  # older than the snapshot: already in it (step 3, not an anomaly)
        if u.first_update_id > snapshot_id + (0 if futures else 1):
            self._gap(f"snapshot {snapshot_id} is older than diff {u.first_update_id}..{u.update_id}")
            self.state = AWAIT
            self.buffered.append(event)
            return
        self._emit(event)
        self.state, self.last_id = SYNCED, u.update_id
        self.counters["resyncs"] += 1
        self._status(RESYNCED, f"book {'re' if self.synced_once else ''}synced from snapshot {snapshot_id}")
        self.synced_once = True

    def _synced(self, event: DepthEvent) -> None:
        u = event.update
        if u.prev_update_id != NO_ID:
            chained = u.prev_update_id == self.last_id
        else:
            chained = u.first_update_id == self.last_id + 1
        if chained:
            self._emit(event)
            self.last_id = u.update_id
            return
        if u.update_id <= self.last_id:
            self.counters["duplicates"] += 1
            return
        expected = f"pu {u.prev_update_id}" if u.prev_update_id != NO_ID else f"U {u.first_update_id}"
        self._emit(event)  # downstream books see the break too and invalidate themselves
        self._gap(f"{expected} does not follow u {self.last_id}")
        self.state = AWAIT
        self.buffered.clear()

    def _gap(self, reason: str) -> None:
        self.counters["gaps"] += 1
        self._status(GAP, reason)
