"""The daemon's collector policy while it trades (serving.daemon.gc_policy.settle_gc)."""

from __future__ import annotations

import gc

from serving.daemon.gc_policy import GC_THRESHOLDS, restore_gc, settle_gc


def test_settle_freezes_what_start_up_made_and_restore_undoes_it():
    before = gc.get_threshold()
    kept = settle_gc()
    try:
        assert kept == before and gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0 and gc.isenabled()  # frozen out of sight, still collecting
    finally:
        restore_gc(kept)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
