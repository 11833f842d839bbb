"""The L2 order book rebuilt from a depth snapshot and diffs, and its summary after each update.

Sequencing (Binance's "how to manage a local order book"; ids as in ``pipeline.data.schemas.DEPTH``):

- a snapshot (``lastUpdateId`` L) replaces the book;
- a diff with u < L is stale (the snapshot holds it already): dropped;
- the first diff applied after a snapshot must straddle it: U <= L + 1 and u >= L (futures ask
  U <= L <= u, spot U <= L + 1 <= u: this accepts both; a diff ending at L re-sets levels to the
  values the snapshot already has, so applying it is harmless);
- every later diff must chain: pu == the previous u where the source gives pu (futures), else
  U == the previous u + 1 (spot); a source without ids (Tardis) applies every diff in order;
- a diff that does not chain is a gap: the book is invalid, and nothing applies, until the next
  snapshot. One with u <= the previous u repeats an applied diff: dropped, the book stays valid.

The summary (``SUMMARY_SIZE`` floats, layout below) is what the depth features read: best prices
and sizes, and per level count L in ``LEVELS`` the cumulative size and notional of the best L
levels of each side, the price of the L-th level, and the size the update itself added within the
best L levels (bid minus ask; 0 on a snapshot, whose changes are unknown). Only an update that
leaves a valid, uncrossed book with both sides has a summary: the others are not feature events.

Both sides are sorted arrays with the best level last, so that adding or removing a level shifts
only the levels better than it. Binance futures diffs cover the whole book (~5,000 levels a side
on the BTC perp, changes at rank ~200 at the median), so a diff of 34 levels (the median) costs
~8 us and one of 600 (the 99th percentile) ~130 us (bench/results/README.md). Each side holds at
most ``MAX_LEVELS`` levels and drops the farthest beyond that (far from anything ``LEVELS`` reads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

LEVELS = np.array([3, 5, 10, 20], dtype=np.int64)  # level counts the summary aggregates
MAX_LEVELS = 10_000

# Summary layout.
S_BID, S_ASK, S_BID_QTY, S_ASK_QTY = 0, 1, 2, 3
PER_LEVEL = 7  # at S_LEVEL0 + PER_LEVEL * g for LEVELS[g]:
L_BID_QTY, L_ASK_QTY = 0, 1  # cumulative size of the best L levels (fewer if the side has fewer)
L_BID_NOTIONAL, L_ASK_NOTIONAL = 2, 3  # sum of price x size over them
L_BID_FAR, L_ASK_FAR = 4, 5  # price of the deepest level included
L_FLOW = 6  # size added by this update within the best L levels: bid minus ask
S_LEVEL0 = 4
SUMMARY_SIZE = S_LEVEL0 + PER_LEVEL * len(LEVELS)

# What applying one update did.
APPLIED, STALE, NO_BOOK, GAP, NO_SUMMARY = 0, 1, 2, 3, 4
OUTCOMES = ("applied", "stale", "no_book", "gap", "no_summary")

# Book status (meta[STATUS]) and the meta slots.
EMPTY, PENDING, SYNCED = 0, 1, 2  # no valid book / a snapshot waiting for its first diff / chained
N_BID, N_ASK, STATUS, LAST_ID = 0, 1, 2, 3
NO_ID = -1  # a missing first/previous update id (spot has no pu, Tardis neither U nor pu)


@njit(cache=True, inline="always")
def _key(side, price):
    """Sort key: ascending with the best level last (bids by price, asks by minus price)."""
    return price if side > 0 else -price


@njit(cache=True)
def _set_level(keys, sizes, meta, side, price, qty):
    """Set one level's size (0 removes it); returns the size it had."""
    s = 0 if side > 0 else 1
    n = meta[N_BID + s]
    row_keys, row_sizes = keys[s], sizes[s]
    key = _key(side, price)
    i = np.searchsorted(row_keys[:n], key)
    if i < n and row_keys[i] == key:
        old = row_sizes[i]
        if qty > 0.0:
            row_sizes[i] = qty
        else:
            for j in range(i, n - 1):
                row_keys[j], row_sizes[j] = row_keys[j + 1], row_sizes[j + 1]
            meta[N_BID + s] = n - 1
        return old
    if qty <= 0.0:
        return 0.0
    if n == row_keys.shape[0]:  # full: drop the farthest level, or this one if it is farther
        if i == 0:
            return 0.0
        for j in range(i - 1):
            row_keys[j], row_sizes[j] = row_keys[j + 1], row_sizes[j + 1]
        row_keys[i - 1], row_sizes[i - 1] = key, qty
        return 0.0
    for j in range(n, i, -1):
        row_keys[j], row_sizes[j] = row_keys[j - 1], row_sizes[j - 1]
    row_keys[i], row_sizes[i] = key, qty
    meta[N_BID + s] = n + 1
    return 0.0


@njit(cache=True)
def _in_sequence(meta, first_id, update_id, prev_id):
    """APPLIED when the diff applies now (and the book status moves on), else why not."""
    status, last = meta[STATUS], meta[LAST_ID]
    if status == EMPTY:
        return NO_BOOK
    if status == PENDING:
        if update_id < last:
            return STALE
        if first_id != NO_ID and first_id > last + 1:
            meta[STATUS] = EMPTY
            return GAP
    else:
        if prev_id != NO_ID:
            chained = prev_id == last
        elif first_id != NO_ID:
            chained = first_id == last + 1
        else:
            chained = True
        if not chained:
            if update_id <= last:
                return STALE
            meta[STATUS] = EMPTY
            return GAP
    meta[STATUS] = SYNCED
    meta[LAST_ID] = update_id
    return APPLIED


@njit(cache=True)
def apply_update(keys, sizes, meta, is_snapshot, first_id, update_id, prev_id, side, price, qty, out):
    """Apply one snapshot or diff (its levels ``side``/``price``/``qty``); write the summary to
    ``out`` and return APPLIED, or return why nothing was summarised (``out`` untouched)."""
    n = side.shape[0]
    added = np.zeros(n)
    if is_snapshot:
        meta[N_BID] = 0
        meta[N_ASK] = 0
        meta[STATUS] = PENDING
        meta[LAST_ID] = update_id
        for r in range(n):
            _set_level(keys, sizes, meta, side[r], price[r], qty[r])
    else:
        outcome = _in_sequence(meta, first_id, update_id, prev_id)
        if outcome != APPLIED:
            return outcome
        for r in range(n):
            added[r] = qty[r] - _set_level(keys, sizes, meta, side[r], price[r], qty[r])
    return _summarise(keys, sizes, meta, side, price, added, out)


@njit(cache=True)
def _summarise(keys, sizes, meta, side, price, added, out):
    nb, na = meta[N_BID], meta[N_ASK]
    if nb == 0 or na == 0 or keys[0, nb - 1] >= -keys[1, na - 1]:
        return NO_SUMMARY  # a side is empty or the book is crossed: nothing to read from it
    out[S_BID], out[S_ASK] = keys[0, nb - 1], -keys[1, na - 1]
    out[S_BID_QTY], out[S_ASK_QTY] = sizes[0, nb - 1], sizes[1, na - 1]
    for s in range(2):
        n = nb if s == 0 else na
        cum = notional = 0.0
        g = 0
        for i in range(min(n, LEVELS[-1])):
            p = keys[s, n - 1 - i] if s == 0 else -keys[s, n - 1 - i]
            cum += sizes[s, n - 1 - i]
            notional += p * sizes[s, n - 1 - i]
            # Where the side has fewer than L levels, the best L are all it has.
            while g < LEVELS.shape[0] and (i + 1 == LEVELS[g] or i + 1 == n):
                base = S_LEVEL0 + PER_LEVEL * g
                out[base + L_BID_QTY + s] = cum
                out[base + L_BID_NOTIONAL + s] = notional
                out[base + L_BID_FAR + s] = p
                g += 1
    for g in range(LEVELS.shape[0]):
        base = S_LEVEL0 + PER_LEVEL * g
        flow = 0.0
        for r in range(side.shape[0]):
            if added[r] == 0.0:
                continue
            # A change counts where its level is (or, removed, was) among the best L after the update.
            if side[r] > 0 and (nb < LEVELS[g] or price[r] >= out[base + L_BID_FAR]):
                flow += added[r]
            elif side[r] < 0 and (na < LEVELS[g] or price[r] <= out[base + L_ASK_FAR]):
                flow -= added[r]
        out[base + L_FLOW] = flow
    return APPLIED


@njit(cache=True)
def replay(keys, sizes, meta, starts, is_snapshot, first_id, update_id, prev_id, side, price, qty, out, outcome):
    """Apply every update (rows ``starts[j]:starts[j + 1]``) in order: summaries into ``out[j]``."""
    for j in range(starts.shape[0] - 1):
        lo, hi = starts[j], starts[j + 1]
        outcome[j] = apply_update(keys, sizes, meta, is_snapshot[j], first_id[j], update_id[j], prev_id[j],
                                  side[lo:hi], price[lo:hi], qty[lo:hi], out[j])


@dataclass(frozen=True)
class DepthUpdate:
    """One depth message: a snapshot or a diff, with its levels (``side`` +1 bid / -1 ask)."""

    ts_ns: int
    update_id: int
    is_snapshot: bool
    side: np.ndarray  # int8
    price: np.ndarray  # float64
    qty: np.ndarray  # float64, absolute; 0 removes the level
    first_update_id: int = NO_ID  # Binance U
    prev_update_id: int = NO_ID  # Binance pu (futures)


@dataclass
class L2Book:
    """A symbol's book for the online path: ``apply`` one update, get the summary or None."""

    keys: np.ndarray = field(default_factory=lambda: np.zeros((2, MAX_LEVELS)))
    sizes: np.ndarray = field(default_factory=lambda: np.zeros((2, MAX_LEVELS)))
    meta: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.int64))
    summary: np.ndarray = field(default_factory=lambda: np.full(SUMMARY_SIZE, math.nan))
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))

    def apply(self, update: DepthUpdate) -> np.ndarray | None:
        outcome = apply_update(
            self.keys, self.sizes, self.meta, bool(update.is_snapshot), int(update.first_update_id),
            int(update.update_id), int(update.prev_update_id), np.asarray(update.side, dtype=np.int8),
            np.asarray(update.price, dtype=np.float64), np.asarray(update.qty, dtype=np.float64), self.summary,
        )
        self.outcomes[OUTCOMES[outcome]] += 1
        return self.summary if outcome == APPLIED else None

    @property
    def valid(self) -> bool:
        return self.meta[STATUS] != EMPTY
