"""DepthSync: Binance's local-book procedure over raw diffs, without any connection."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.features.l2book import NO_ID, DepthUpdate
from serving.feeds.base import COUNTERS, GAP, RESYNCED, DepthEvent
from serving.feeds.binance_depth import AWAIT, PENDING, SYNCED, DepthSync, diff_event, snapshot_event

SYMBOL = "BTC/USDT:USDT"
LINEAR = {"contract": True, "linear": True, "inverse": False, "contractSize": 1.0}


def diff(first: int, last: int, prev: int = NO_ID) -> DepthEvent:
    update = DepthUpdate(last, last, False, np.array([1], np.int8), np.array([100.0]), np.array([1.0]), first, prev)
    return DepthEvent(SYMBOL, last, update)


def snap(last: int) -> DepthEvent:
    update = DepthUpdate(last, last, True, np.array([1, -1], np.int8), np.array([100.0, 101.0]), np.ones(2))
    return DepthEvent(SYMBOL, last, update)


class Out:
    def __init__(self) -> None:
        self.events: list = []
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.sync = DepthSync(SYMBOL, self.events.append, lambda s, d: self.events.append((s, d)), self.counters, 4)

    def ids(self) -> list:
        return [("S" if e.update.is_snapshot else "D", e.update.update_id) if type(e) is DepthEvent else e
                for e in self.events]  # fmt: skip


def test_futures_diffs_buffer_until_the_snapshot_then_chain_by_pu() -> None:
    out = Out()
    for event in (diff(1, 5, 0), diff(6, 9, 5), diff(10, 14, 9)):
        out.sync.on_diff(event)
    assert out.events == [] and out.sync.wants_snapshot
    assert out.sync.on_snapshot(snap(8))
    # 1..5 is in the snapshot (dropped), 6..9 straddles 8 (applied), 10..14 chains
    assert out.ids() == [("S", 8), ("D", 9), (RESYNCED, "book synced from snapshot 8"), ("D", 14)]
    assert out.sync.state == SYNCED and not out.sync.on_snapshot(snap(20))  # not wanted: ignored
    out.sync.on_diff(diff(10, 14, 9))  # a repeat
    assert out.counters["duplicates"] == 1 and out.ids()[-1] == ("D", 14)


def test_a_broken_chain_is_emitted_reported_and_resynced() -> None:
    out = Out()
    out.sync.on_snapshot(snap(8))
    out.sync.on_diff(diff(6, 9, 5))
    out.sync.on_diff(diff(15, 20, 14))  # 10..14 was lost
    assert out.ids()[-2:] == [("D", 20), (GAP, "pu 14 does not follow u 9")]
    assert out.sync.state == AWAIT and out.counters["gaps"] == 1
    out.sync.on_diff(diff(21, 25, 20))
    out.sync.on_diff(diff(26, 30, 25))
    out.sync.on_snapshot(snap(27))
    assert out.ids()[-3:] == [("S", 27), ("D", 30), (RESYNCED, "book resynced from snapshot 27")]
    assert out.counters["resyncs"] == 2


def test_a_snapshot_older_than_the_stream_is_a_gap_and_another_is_wanted() -> None:
    out = Out()
    out.sync.on_diff(diff(10, 14, 9))
    out.sync.on_snapshot(snap(8))  # diff 10.. does not straddle 8: 9 is missing in between
    assert out.ids() == [("S", 8), (GAP, "snapshot 8 is older than diff 10..14")]
    assert out.sync.wants_snapshot and [e.update.update_id for e in out.sync.buffered] == [14]
    out.sync.on_snapshot(snap(12))
    assert out.ids()[-3:] == [("S", 12), ("D", 14), (RESYNCED, "book synced from snapshot 12")]


def test_spot_diffs_straddle_l_plus_one_and_chain_by_first_id() -> None:
    out = Out()
    out.sync.on_snapshot(snap(8))
    out.sync.on_diff(diff(5, 8))  # u <= L: in the snapshot
    out.sync.on_diff(diff(9, 12))  # U <= L + 1 <= u
    out.sync.on_diff(diff(13, 15))
    out.sync.on_diff(diff(17, 18))  # 16 missing
    assert out.ids() == [("S", 8), ("D", 12), (RESYNCED, "book synced from snapshot 8"), ("D", 15), ("D", 18),
                         (GAP, "U 17 does not follow u 15")]  # fmt: skip


def test_a_reconnect_loses_the_book_and_the_buffer_is_bounded() -> None:
    out = Out()
    out.sync.on_snapshot(snap(8))
    out.sync.on_diff(diff(6, 9, 5))
    out.sync.lost("depth stream interrupted: NetworkError")
    assert out.ids()[-1] == (GAP, "depth stream interrupted: NetworkError") and out.sync.state == AWAIT
    out.sync.lost("again")  # already waiting: no second gap
    assert out.counters["gaps"] == 1
    for k in range(6):
        out.sync.on_diff(diff(10 + k, 10 + k, 9 + k))
    assert [e.update.update_id for e in out.sync.buffered] == [12, 13, 14, 15] and out.counters["filtered"] == 2
    out.sync.on_snapshot(snap(12))
    assert out.sync.state == SYNCED
    assert out.ids()[-6:] == [("S", 12), ("D", 12), (RESYNCED, "book resynced from snapshot 12"), ("D", 13), ("D", 14),
                              ("D", 15)]  # fmt: skip


def test_pending_waits_for_the_straddling_diff() -> None:
    out = Out()
    out.sync.on_snapshot(snap(8))
    assert out.sync.state == PENDING and not out.sync.wants_snapshot
    out.sync.on_diff(diff(1, 5, 0))
    assert out.sync.state == PENDING and out.ids() == [("S", 8)]


def test_raw_messages_and_ccxt_books_as_depth_events() -> None:
    message = {"e": "depthUpdate", "E": 1723161256612, "T": 1723161256605, "s": "BTCUSDT", "U": 5, "u": 9,
               "pu": 4, "b": [["61800.20", "2.909"], ["61700.0", "0.000"]], "a": [["61800.30", "1.5"]]}  # fmt: skip
    event = diff_event(SYMBOL, message, LINEAR, 0)
    u = event.update
    assert event.ts_ns == u.ts_ns == 1723161256605 * 10**6  # T, as the files source stores it
    assert (u.first_update_id, u.update_id, u.prev_update_id, u.is_snapshot) == (5, 9, 4, False)
    assert u.side.tolist() == [1, 1, -1] and u.price.tolist() == [61800.2, 61700.0, 61800.3]
    assert u.qty.tolist() == [2.909, 0.0, 1.5]
    spot = diff_event(SYMBOL, {k: v for k, v in message.items() if k not in ("T", "pu")}, {}, 0)
    assert spot.ts_ns == 1723161256612 * 10**6 and spot.update.prev_update_id == NO_ID
    inverse = {"contract": True, "linear": False, "inverse": True, "contractSize": 100.0}
    book = {"nonce": 77, "timestamp": None, "bids": [[50_000.0, 10]], "asks": [[50_010.0, 5]]}
    snapshot = snapshot_event("BTC/USD:BTC", book, inverse, 123)
    assert snapshot.ts_ns == 123 and snapshot.update.update_id == 77 and snapshot.update.is_snapshot
    assert snapshot.update.qty.tolist() == pytest.approx([10 * 100 / 50_000.0, 5 * 100 / 50_010.0])
