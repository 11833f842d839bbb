"""The L2 book rebuilt from a snapshot and diffs (pipeline.features.l2book): Binance's sequencing
rules (stale diffs, the straddling first diff, pu / U chaining, gaps until the next snapshot), the
summary against values computed by hand, and the depth events the merged stream gets from it."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pyarrow as pa
import pytest

from pipeline.data.schemas import DEPTH, QUOTES, TRADES, Kind
from pipeline.data.sources.files import FileSource
from pipeline.features import l2book as b
from pipeline.features.core import KIND_DEPTH, KIND_QUOTE
from pipeline.features.events import depth_updates, merge_events
from pipeline.features.l2book import NO_ID, DepthUpdate, L2Book

MS = 1_000_000


def update(uid, bids=(), asks=(), first=NO_ID, prev=NO_ID, snapshot=False, ts_ns=0) -> DepthUpdate:
    levels = [(1, p, q) for p, q in bids] + [(-1, p, q) for p, q in asks]
    side, price, qty = (np.array(c, dtype=t) for c, t in zip(zip(*levels), (np.int8, float, float))) if levels else (
        np.empty(0, np.int8), np.empty(0), np.empty(0))
    return DepthUpdate(ts_ns, uid, snapshot, side, price, qty, first, prev)


SNAPSHOT = update(100, bids=[(100.0, 1.0), (99.9, 2.0), (99.8, 3.0), (99.5, 4.0)],
                  asks=[(100.1, 1.5), (100.2, 2.5), (100.4, 1.0)], snapshot=True)


def level(summary, levels, slot):
    g = list(b.LEVELS).index(levels)
    return summary[b.S_LEVEL0 + b.PER_LEVEL * g + slot]


def outcome(book: L2Book, upd: DepthUpdate) -> str:
    before = dict(book.outcomes)
    book.apply(upd)
    return next(name for name, count in book.outcomes.items() if count > before[name])


def test_a_snapshot_is_summarised_with_cumulative_sizes_notionals_and_far_prices():
    book = L2Book()
    s = book.apply(SNAPSHOT)
    assert s is not None
    assert (s[b.S_BID], s[b.S_ASK], s[b.S_BID_QTY], s[b.S_ASK_QTY]) == (100.0, 100.1, 1.0, 1.5)
    assert level(s, 3, b.L_BID_QTY) == pytest.approx(6.0) and level(s, 3, b.L_BID_FAR) == 99.8
    assert level(s, 3, b.L_BID_NOTIONAL) == pytest.approx(100.0 + 2 * 99.9 + 3 * 99.8)
    assert level(s, 3, b.L_ASK_QTY) == pytest.approx(5.0) and level(s, 3, b.L_ASK_FAR) == 100.4
    # Fewer levels than L: all of them.
    assert level(s, 5, b.L_BID_QTY) == pytest.approx(10.0) and level(s, 20, b.L_BID_FAR) == 99.5
    assert level(s, 20, b.L_ASK_QTY) == pytest.approx(5.0)
    assert all(level(s, n, b.L_FLOW) == 0.0 for n in b.LEVELS)  # a snapshot's changes are unknown


def test_futures_diffs_stale_straddling_chained_then_a_gap_until_the_next_snapshot():
    book = L2Book()
    book.apply(SNAPSHOT)
    assert outcome(book, update(99, first=90, prev=89, bids=[(100.0, 9.0)])) == "stale"  # u < lastUpdateId
    # The first diff straddles lastUpdateId (U <= L <= u); its pu is not checked.
    s = book.apply(update(105, first=95, prev=94, bids=[(100.0, 3.0), (99.7, 5.0)], asks=[(100.1, 0.0)]))
    assert s is not None
    # bids 100.0:3 99.9:2 99.8:3 99.7:5 99.5:4, asks 100.2:2.5 100.4:1
    assert (s[b.S_BID], s[b.S_ASK], s[b.S_BID_QTY], s[b.S_ASK_QTY]) == (100.0, 100.2, 3.0, 2.5)
    assert level(s, 3, b.L_BID_QTY) == pytest.approx(8.0) and level(s, 3, b.L_BID_FAR) == 99.8
    assert level(s, 5, b.L_BID_QTY) == pytest.approx(17.0) and level(s, 5, b.L_BID_FAR) == 99.5
    assert level(s, 3, b.L_ASK_NOTIONAL) == pytest.approx(2.5 * 100.2 + 100.4)
    # Flow: +2 at 100.0 (in the best 3), +5 at 99.7 (4th: in the best 5 only), the ask 100.1
    # pulled (-1.5 on the ask side: +1.5 for the bids; the side has fewer than 3 levels left).
    assert level(s, 3, b.L_FLOW) == pytest.approx(2.0 + 1.5)
    assert level(s, 5, b.L_FLOW) == pytest.approx(2.0 + 5.0 + 1.5)
    assert outcome(book, update(110, first=106, prev=105, asks=[(100.15, 0.5)])) == "applied"
    assert book.summary[b.S_ASK] == 100.15
    assert outcome(book, update(110, first=106, prev=105, asks=[(100.15, 0.5)])) == "stale"  # a repeat
    assert outcome(book, update(115, first=111, prev=108, bids=[(100.0, 1.0)])) == "gap"  # pu != 110
    assert not book.valid
    assert outcome(book, update(120, first=116, prev=115, bids=[(100.0, 1.0)])) == "no_book"
    assert book.apply(update(200, bids=[(101.0, 1.0)], asks=[(101.1, 1.0)], snapshot=True)) is not None
    assert outcome(book, update(205, first=199, prev=190, bids=[(101.0, 2.0)])) == "applied"
    assert book.summary[b.S_BID_QTY] == 2.0
    assert book.outcomes == {"applied": 5, "stale": 2, "no_book": 1, "gap": 1, "no_summary": 0}


def test_a_diff_after_the_snapshot_that_does_not_straddle_it_is_a_gap():
    book = L2Book()
    book.apply(SNAPSHOT)
    assert outcome(book, update(110, first=102, prev=101, bids=[(100.0, 2.0)])) == "gap"  # U > L + 1


def test_spot_diffs_chain_on_U_equal_to_the_previous_u_plus_one():
    book = L2Book()
    book.apply(SNAPSHOT)
    assert outcome(book, update(100, first=95)) == "applied"  # spot drops u <= L; re-setting is harmless
    assert outcome(book, update(103, first=101, bids=[(99.9, 7.0)])) == "applied"  # U = L + 1
    assert outcome(book, update(106, first=104, asks=[(100.1, 0.25)])) == "applied"
    assert book.summary[b.S_ASK_QTY] == 0.25
    assert outcome(book, update(110, first=108, bids=[(99.9, 1.0)])) == "gap"  # 107 is missing


def test_without_ids_every_diff_after_a_snapshot_applies_in_order():
    book = L2Book()
    assert outcome(book, update(5, bids=[(100.0, 1.0)], asks=[(100.1, 1.0)])) == "no_book"  # no snapshot yet
    book.apply(SNAPSHOT)
    assert outcome(book, update(100, bids=[(100.05, 2.0)])) == "applied"  # Tardis: update id = time
    assert book.summary[b.S_BID] == 100.05


def test_a_crossed_or_one_sided_book_has_no_summary_but_stays_in_sequence():
    book = L2Book()
    book.apply(SNAPSHOT)
    assert outcome(book, update(101, first=100, prev=99, bids=[(100.3, 1.0)])) == "no_summary"  # crossed
    assert outcome(book, update(102, first=102, prev=101, bids=[(100.3, 0.0)])) == "applied"
    assert outcome(book, update(103, first=103, prev=102, asks=[(p, 0.0) for p in (100.1, 100.2, 100.4)])) == \
        "no_summary"  # no ask left
    assert book.valid


def test_a_full_side_drops_its_farthest_level():
    book = L2Book(keys=np.zeros((2, 3)), sizes=np.zeros((2, 3)))
    s = book.apply(SNAPSHOT)  # 4 bids into 3 slots: 99.5 goes
    assert level(s, 20, b.L_BID_QTY) == pytest.approx(6.0) and level(s, 20, b.L_BID_FAR) == 99.8
    book.apply(update(101, first=100, prev=99, bids=[(99.95, 1.0), (99.0, 9.0)]))  # 99.0: farther than all
    assert level(book.summary, 20, b.L_BID_QTY) == pytest.approx(4.0)
    assert level(book.summary, 20, b.L_BID_FAR) == 99.9


# ---- depth rows -> updates -> events of the merged stream -----------------------------------------


def depth_rows(updates: list[tuple[int, int, int | None, int | None, bool, list[tuple[int, float, float]]]],
               recv: list[int]) -> pa.Table:
    """Store rows of (ts_ns, u, U, pu, is_snapshot, [(side, price, qty)]) updates; ``recv`` per update."""
    rows = []
    for (ts, u, first, prev, snap, levels), r in zip(updates, recv):
        rows += [{"ts_ns": ts, "recv_ns": r, "update_id": u, "first_update_id": first, "prev_update_id": prev,
                  "is_snapshot": snap, "side": side, "price": price, "qty": qty} for side, price, qty in levels]
    return pa.Table.from_pylist(rows, schema=DEPTH)


def test_rows_group_into_updates_in_sequence_order_whatever_the_storage_order():
    table = depth_rows([
        (3 * MS, 105, 95, 94, False, [(1, 100.0, 3.0), (-1, 100.1, 0.0)]),
        (2 * MS, 100, None, None, True, [(1, 100.0, 1.0), (-1, 100.1, 1.5)]),
        (3 * MS, 110, 106, 105, False, [(1, 99.9, 2.0)]),
    ], recv=[1, 2, 3])
    updates = depth_updates(table.take([3, 0, 2, 1, 4]))  # rows of different updates interleaved
    assert updates.update_id.tolist() == [100, 105, 110]
    assert updates.is_snapshot.tolist() == [True, False, False]
    assert updates.starts.tolist() == [0, 2, 4, 5]
    assert updates.first_update_id.tolist() == [NO_ID, 95, 106] and updates.prev_update_id.tolist() == [NO_ID, 94, 105]
    first = next(iter(updates))
    assert sorted(zip(first.side.tolist(), first.price.tolist())) == [(-1, 100.1), (1, 100.0)]


def test_depth_events_take_the_latest_time_so_far_and_keep_their_sequence_in_the_merge():
    # A Binance capture: the REST snapshot arrives (recv 50) after the first diff that follows it
    # (recv 40), which the book can only apply once it has the snapshot.
    table = depth_rows([
        (10 * MS, 90, 80, 79, False, [(1, 99.0, 1.0)]),  # before the snapshot: no book
        (12 * MS, 100, None, None, True, [(1, 100.0, 1.0), (-1, 100.1, 1.5)]),
        (11 * MS, 105, 95, 94, False, [(1, 100.0, 3.0)]),
        (13 * MS, 110, 106, 105, False, [(-1, 100.1, 2.0)]),
    ], recv=[30, 50, 40, 60])
    quotes = pa.Table.from_pylist([{"ts_ns": 12 * MS, "recv_ns": 45, "update_id": 1, "bid_px": 100.0,
                                    "bid_qty": 1.0, "ask_px": 100.1, "ask_qty": 1.5}], schema=QUOTES)
    events = merge_events(TRADES.empty_table(), quotes, table)
    assert events.kind.tolist() == [KIND_QUOTE, KIND_DEPTH, KIND_DEPTH, KIND_DEPTH]
    assert events.ts_ns.tolist() == [12 * MS, 12 * MS, 12 * MS, 13 * MS]  # the diff at 11 ms waited for 12
    rows = events.depth_row[events.kind == KIND_DEPTH]
    assert events.depth[rows, b.S_BID_QTY].tolist() == [1.0, 3.0, 3.0]
    assert events.depth[rows, b.S_ASK_QTY].tolist() == [1.5, 1.5, 2.0]
    assert math.isnan(events.bid[1]) and events.depth_row[0] == -1
    # Slicing keeps the summaries whole: the rows still point at them.
    tail = events.slice(2)
    assert tail.depth[tail.depth_row[0], b.S_BID_QTY] == 3.0
    ticks, kept = events.ticks_only()
    assert len(ticks) == 1 and kept.tolist() == [0]


# ---- real depth: the compiled book against a plain rebuild -----------------------------------------


def plain_summaries(updates) -> list[np.ndarray]:
    """Binance's procedure, written plainly with dicts (futures: pu chaining), summarised the same way."""
    books: tuple[dict, dict] = ({}, {})
    last, status, out = None, "empty", []
    for upd in updates:
        changes = []
        if upd.is_snapshot:
            books = ({}, {})
            for side, price, qty in zip(upd.side, upd.price, upd.qty):
                if qty > 0:
                    books[0 if side > 0 else 1][price] = qty
            last, status = upd.update_id, "pending"
        elif status == "empty" or (status == "pending" and upd.update_id < last):
            continue
        elif (status == "pending" and upd.first_update_id <= last + 1) or upd.prev_update_id == last:
            for side, price, qty in zip(upd.side, upd.price, upd.qty):
                book = books[0 if side > 0 else 1]
                changes.append((side, price, qty - book.get(price, 0.0)))
                if qty > 0:
                    book[price] = qty
                else:
                    book.pop(price, None)
            last, status = upd.update_id, "synced"
        else:
            status = "empty"
            continue
        top = int(b.LEVELS[-1])
        bids, asks = heapq.nlargest(top, books[0].items()), heapq.nsmallest(top, books[1].items())
        s = np.zeros(b.SUMMARY_SIZE)
        s[[b.S_BID, b.S_ASK, b.S_BID_QTY, b.S_ASK_QTY]] = bids[0][0], asks[0][0], bids[0][1], asks[0][1]
        for g, n in enumerate(b.LEVELS):
            at = b.S_LEVEL0 + b.PER_LEVEL * g
            for k, levels in enumerate((bids[:n], asks[:n])):
                s[at + b.L_BID_QTY + k] = sum(q for _, q in levels)
                s[at + b.L_BID_NOTIONAL + k] = sum(p * q for p, q in levels)
                s[at + b.L_BID_FAR + k] = levels[-1][0]
            s[at + b.L_FLOW] = sum(d for side, p, d in changes if side > 0 and p >= bids[:n][-1][0]) - sum(
                d for side, p, d in changes if side < 0 and p <= asks[:n][-1][0])
        out.append(s)
    return out


@pytest.mark.realdata
def test_the_book_matches_a_plain_rebuild_on_real_depth(shared_data):
    depth = pa.concat_tables(batch.rows.select(DEPTH.names) for batch in
                             FileSource(shared_data / "binance_ws_raw/usdm_btcusdt_20240808.gz").batches()
                             if batch.kind == Kind.DEPTH)
    updates = depth_updates(depth)
    events = merge_events(TRADES.empty_table(), QUOTES.empty_table(), depth)
    expected = np.array(plain_summaries(updates))
    assert len(updates) == 6_552 and len(expected) == len(events.depth) == 6_548  # 4 diffs before the snapshot
    np.testing.assert_allclose(events.depth, expected, rtol=1e-12, atol=1e-9)


@pytest.mark.realdata
@pytest.mark.parametrize("market, rule", [("spot_btcusdt", "U"), ("cm_btcusd_perp", "pu")])
def test_real_diffs_chain_across_the_capture_split_without_a_gap(shared_data, market, rule):
    """Spot diffs chain on U (no pu), COIN-M on pu; the 0809 file continues the 0808 one."""
    depth = pa.concat_tables(batch.rows.select(DEPTH.names) for day in ("20240808", "20240809")
                             for batch in FileSource(shared_data / f"binance_ws_raw/{market}_{day}.gz").batches()
                             if batch.kind == Kind.DEPTH)
    updates = depth_updates(depth)
    assert (updates.prev_update_id[~updates.is_snapshot] == NO_ID).all() == (rule == "U")
    book = L2Book()
    for upd in updates:
        book.apply(upd)
    assert book.outcomes["gap"] == 0 and book.outcomes["stale"] == 0
    assert book.outcomes["applied"] > 0.99 * len(updates)  # all but the few diffs before the snapshot
