"""The trees per tick and in batches: eight trees (or, in a batch, one row's trees eight at a time)
walked side by side over a "walk table", bit for bit ``forest_raw`` / ``xgb_margin`` of
pipeline.models.compiled.evaluators.

One tree's walk is a chain of dependent loads (node -> feature -> next node): the core waits on
each. Walking ``WALK_GROUP`` trees in lockstep keeps that many chains in flight (~2x faster per
tick). The walk table (``walk_table``) turns each leaf into a node that steps to itself: it
reads the row's extra slot ``xf[k] = -inf``, which is below every leaf's value (XGBoost: ``-inf
< value`` goes left) and threshold (forest: 0.0, ``-inf <= 0`` goes left), and its left child
is itself. So every tree of a group takes the group's deepest walk without a leaf test, and a
row without NaN (the usual one, checked once per tick) skips the NaN test as well. The leaves
are then summed in tree order, as ``forest_raw`` / ``xgb_margin`` do: bit for bit the same
probabilities. ``xf`` is the row in float32 followed by that ``-inf`` slot.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.models.compiled.evaluators import LEFT, SPLIT, calibrate, xgb_sigmoid

WALK_GROUP = 8


def walk_table(nodes: np.ndarray, n_features: int) -> np.ndarray:
    """``nodes`` with each leaf's row turned into ``[itself, n_features << 1]``: ``xf[k] = -inf``
    sends it left, to its own row."""
    table = nodes.copy()
    leaf = table[:, LEFT] < 0
    table[leaf, LEFT] = np.flatnonzero(leaf)
    table[leaf, SPLIT] = n_features << 1
    return table


def group_depths(nodes: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """int32 ``[trees // WALK_GROUP]``: the deepest leaf of each full group of trees (children
    always have larger rows than their parent in both exports, so one pass in row order suffices)."""
    depth = np.zeros(len(nodes), dtype=np.int64)
    left = nodes[:, LEFT]
    for node in np.flatnonzero(left >= 0):
        depth[left[node]] = depth[left[node] + 1] = depth[node] + 1
    per_tree = np.maximum.reduceat(depth, roots) if len(roots) else depth[:0]
    full = len(roots) - len(roots) % WALK_GROUP
    return per_tree[:full].reshape(-1, WALK_GROUP).max(axis=1).astype(np.int32)


@njit(cache=True, error_model="numpy", inline="always")
def _xgb_step(table, values, xf, node, finite):
    n = np.uint64(node)  # unsigned: no negative-index wrap-around test on each load (~2x faster)
    left, split = table[n, LEFT], table[n, SPLIT]
    v = xf[np.uint64(split >> 1)]
    step = left + np.int32(not (v < values[n]))
    if finite:  # loop-invariant: LLVM keeps one loop without the NaN test
        return step
    return left + (split & 1) if v != v else step


@njit(cache=True, error_model="numpy", inline="always")
def _forest_step(table, thresholds, xf, node, finite):
    n = np.uint64(node)
    left, split = table[n, LEFT], table[n, SPLIT]
    v = xf[np.uint64(split >> 1)]
    step = left + np.int32(not (v <= thresholds[n]))
    if finite:
        return step
    return left + (split & 1) if v != v else step


@njit(cache=True, error_model="numpy")
def xgb_margin_walk(table, values, roots, depths, base_margin, xf, finite):
    """``xgb_margin`` over the walk table, eight trees at a time (the margin added in tree order);
    ``finite``: the row has no NaN. (Two copies of the walk, each with ``finite`` a constant: a
    test left in the walk's steps costs ~25 %.)"""
    if finite:
        return _xgb_walk(table, values, roots, depths, base_margin, xf, True)
    return _xgb_walk(table, values, roots, depths, base_margin, xf, False)


@njit(cache=True, error_model="numpy", inline="always")
def _xgb_walk(table, values, roots, depths, base_margin, xf, finite):
    trees = roots.shape[0]
    full = trees - trees % WALK_GROUP
    margin = base_margin[0]
    for g in range(0, full, WALK_GROUP):
        n0, n1, n2, n3 = roots[g], roots[g + 1], roots[g + 2], roots[g + 3]
        n4, n5, n6, n7 = roots[g + 4], roots[g + 5], roots[g + 6], roots[g + 7]
        for _ in range(depths[g // WALK_GROUP]):
            n0 = _xgb_step(table, values, xf, n0, finite)
            n1 = _xgb_step(table, values, xf, n1, finite)
            n2 = _xgb_step(table, values, xf, n2, finite)
            n3 = _xgb_step(table, values, xf, n3, finite)
            n4 = _xgb_step(table, values, xf, n4, finite)
            n5 = _xgb_step(table, values, xf, n5, finite)
            n6 = _xgb_step(table, values, xf, n6, finite)
            n7 = _xgb_step(table, values, xf, n7, finite)
        margin = margin + values[np.uint64(n0)]
        margin = margin + values[np.uint64(n1)]
        margin = margin + values[np.uint64(n2)]
        margin = margin + values[np.uint64(n3)]
        margin = margin + values[np.uint64(n4)]
        margin = margin + values[np.uint64(n5)]
        margin = margin + values[np.uint64(n6)]
        margin = margin + values[np.uint64(n7)]
    for t in range(full, trees):
        node = roots[t]
        while table[node, LEFT] != node:
            node = _xgb_step(table, values, xf, node, finite)
        margin = margin + values[node]
    return margin


@njit(cache=True, error_model="numpy")
def forest_raw_walk(table, thresholds, leaf_values, roots, depths, xf, finite):
    """``forest_raw`` over the walk table, eight trees at a time (the sum in tree order)."""
    if finite:
        return _forest_walk(table, thresholds, leaf_values, roots, depths, xf, True)
    return _forest_walk(table, thresholds, leaf_values, roots, depths, xf, False)


@njit(cache=True, error_model="numpy", inline="always")
def _forest_walk(table, thresholds, leaf_values, roots, depths, xf, finite):
    trees = roots.shape[0]
    full = trees - trees % WALK_GROUP
    total = 0.0
    for g in range(0, full, WALK_GROUP):
        n0, n1, n2, n3 = roots[g], roots[g + 1], roots[g + 2], roots[g + 3]
        n4, n5, n6, n7 = roots[g + 4], roots[g + 5], roots[g + 6], roots[g + 7]
        for _ in range(depths[g // WALK_GROUP]):
            n0 = _forest_step(table, thresholds, xf, n0, finite)
            n1 = _forest_step(table, thresholds, xf, n1, finite)
            n2 = _forest_step(table, thresholds, xf, n2, finite)
            n3 = _forest_step(table, thresholds, xf, n3, finite)
            n4 = _forest_step(table, thresholds, xf, n4, finite)
            n5 = _forest_step(table, thresholds, xf, n5, finite)
            n6 = _forest_step(table, thresholds, xf, n6, finite)
            n7 = _forest_step(table, thresholds, xf, n7, finite)
        total += leaf_values[np.uint64(n0)]
        total += leaf_values[np.uint64(n1)]
        total += leaf_values[np.uint64(n2)]
        total += leaf_values[np.uint64(n3)]
        total += leaf_values[np.uint64(n4)]
        total += leaf_values[np.uint64(n5)]
        total += leaf_values[np.uint64(n6)]
        total += leaf_values[np.uint64(n7)]
    for t in range(full, trees):
        node = roots[t]
        while table[node, LEFT] != node:
            node = _forest_step(table, thresholds, xf, node, finite)
        total += leaf_values[node]
    return total / trees


@njit(cache=True, error_model="numpy")
def _walk_rows(nodes, X):
    """The batch's inputs: the walk table (``walk_table``), each tree's depth (children have
    larger rows than their parent), X in float32 with the ``-inf`` slot, and whether each row is
    free of NaN."""
    n, k = X.shape
    table = nodes.copy()
    depth = np.zeros(nodes.shape[0], dtype=np.int64)
    for node in range(nodes.shape[0]):
        left = nodes[node, LEFT]
        if left < 0:
            table[node, LEFT] = node
            table[node, SPLIT] = k << 1
        else:
            depth[left] = depth[node] + 1
            depth[left + 1] = depth[node] + 1
    xf = np.empty((n, k + 1), dtype=np.float32)
    finite = np.empty(n, dtype=np.bool_)
    for i in range(n):
        ok = True
        for j in range(k):
            v = np.float32(X[i, j])
            xf[i, j] = v
            ok &= v == v
        xf[i, k] = -np.inf
        finite[i] = ok
    return table, depth, xf, finite


@njit(cache=True, error_model="numpy")
def _group_depths(depth, roots, nodes):
    """``group_depths`` from each node's depth: the deepest leaf of each full group of trees."""
    groups = roots.shape[0] // WALK_GROUP
    out = np.zeros(groups, dtype=np.int32)
    for t in range(groups * WALK_GROUP):
        stop = roots[t + 1] if t + 1 < roots.shape[0] else nodes
        out[t // WALK_GROUP] = max(out[t // WALK_GROUP], depth[roots[t]:stop].max())
    return out


@njit(cache=True, error_model="numpy")
def forest_proba_batch(nodes, thresholds, leaf_values, roots, calibration, X):
    """Row by row the per-tick walk (``forest_raw_walk``: eight trees side by side, the sum in tree
    order), without a call per row: each value is ``forest_proba``'s."""
    table, depth, xf, finite = _walk_rows(nodes, X)
    depths = _group_depths(depth, roots, nodes.shape[0])
    out = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        out[i] = calibrate(calibration, forest_raw_walk(table, thresholds, leaf_values, roots, depths, xf[i],
                                                        finite[i]))
    return out


@njit(cache=True, error_model="numpy")
def xgb_proba_batch(nodes, values, roots, base_margin, calibration, X):
    """Row by row the per-tick walk (``xgb_margin_walk``); each row's float32 margin is ``xgb_margin``'s."""
    table, depth, xf, finite = _walk_rows(nodes, X)
    depths = _group_depths(depth, roots, nodes.shape[0])
    out = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        margin = xgb_margin_walk(table, values, roots, depths, base_margin, xf[i], finite[i])
        out[i] = calibrate(calibration, np.float64(xgb_sigmoid(margin)))
    return out
