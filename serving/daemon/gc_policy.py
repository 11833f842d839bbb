"""The cyclic garbage collector while the daemon trades: start-up's objects frozen, young collections
rare (bench/results/latency.json ``gc``)."""

from __future__ import annotations

import gc

# Young collections after settle_gc: 1 in ~70 of the default's (700); the trading loop allocates
# little that outlives a tick, so a collection mostly finds the other threads' garbage.
GC_THRESHOLDS = (50_000, 20, 100)


def settle_gc() -> tuple[int, ...]:
    """The cyclic collector while the daemon trades (bench/results/latency.json ``gc``): what exists
    after start-up (modules, the model, the engine) is frozen out of its sight, so a collection
    scans only what was allocated since, and young collections run rarely. It stays on: the
    watcher's model loads make cyclic garbage that must not pile up. Returns the thresholds to
    restore (``restore_gc``: the policy ends with ``run``, as in tests that run daemons in-process)."""
    before = gc.get_threshold()
    gc.collect(1)  # the young garbage; a full collection costs 0.2-0.4 s here for start-up's, once
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return before


def restore_gc(thresholds: tuple[int, ...]) -> None:
    gc.unfreeze()
    gc.set_threshold(*thresholds)
