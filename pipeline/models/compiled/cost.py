"""What a version costs to serve, per tick: measured on this machine and counted independently of it.

The retrain logs it with every ensemble (MLflow metrics ``serve_*`` and the version tag
``autoscalp.serve_tick_us``), so runs compare on serving cost beside their AUC: the whole
tick-to-decision budget (bench/latency.py: p50 <= 10 us, p99 <= 20 us) leaves the ensemble about
4 us of it with the default model sizes, and the tuning search space allows models several times
that size (forest 200 trees of depth 12, XGBoost depth 8, LSTM hidden 64).

``tree_steps`` is the number of node steps one tick takes over all trees (each group of eight
walks its deepest tree's depth, walks.WALK_GROUP): the trees' cost in a unit that does not depend
on the machine or its load. The timing is the per-tick call (``proba_tick_in``) over the given rows
in order from a fresh ring, after one warm-up pass.
"""

from __future__ import annotations

import time

import numpy as np

from pipeline.models.compiled.packed import CompiledEnsemble
from pipeline.models.compiled.walks import WALK_GROUP, group_depths, tree_depths

MAX_ROWS = 2_000


def tree_steps(nodes: np.ndarray, roots: np.ndarray) -> int:
    """Node steps per tick for one tree model's export (its ``nodes`` and ``roots``): each full
    group walks its deepest tree's depth, the remainder one tree at a time to its own leaf."""
    depths = tree_depths(nodes, roots)
    full = len(roots) - len(roots) % WALK_GROUP
    return int(group_depths(nodes, roots).sum()) * WALK_GROUP + int(depths[full:].sum())


def serving_cost(compiled: CompiledEnsemble, X: np.ndarray) -> dict[str, float]:
    """Per-tick cost of ``compiled`` on the rows of X (at most ``MAX_ROWS``): ``tick_us_p50`` /
    ``tick_us_p99`` measured here, ``tree_steps``, ``trees`` and ``lstm_hidden`` counted."""
    rows = np.ascontiguousarray(X[:MAX_ROWS], dtype=np.float64)
    ring, state = compiled.new_ring()
    for x in rows:  # warm-up: compiled, faulted in, caches filled
        compiled.proba_tick_in(x, ring, state)
    ring, state = compiled.new_ring()
    clock, ns = time.perf_counter_ns, np.empty(len(rows))
    for i, x in enumerate(rows):
        t0 = clock()
        compiled.proba_tick_in(x, ring, state)
        ns[i] = clock() - t0
    cost = {"tick_us_p50": float(np.percentile(ns, 50)) / 1e3, "tick_us_p99": float(np.percentile(ns, 99)) / 1e3,
            "tree_steps": 0.0, "trees": 0.0, "lstm_hidden": 0.0}  # fmt: skip
    for member in compiled.header["members"]:
        arrays = compiled.arrays[member["name"]]
        if member["kind"] in ("forest", "xgb"):
            cost["tree_steps"] += tree_steps(arrays["nodes"], arrays["roots"])
            cost["trees"] += len(arrays["roots"])
        elif member["kind"] == "lstm":
            cost["lstm_hidden"] = float(arrays["w_hh"].shape[1])
    return cost
