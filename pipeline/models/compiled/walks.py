"""The trees per tick and in batches: eight trees (or, in a batch, one row's trees eight at a time)
walked side by side over a "walk table", bit for bit ``forest_raw`` / ``xgb_margin`` of
pipeline.models.compiled.evaluators.

One tree's walk is a chain of dependent loads (node -> feature -> next node): the core waits on
each. Walking ``WALK_GROUP`` trees in lockstep keeps that many chains in flight (~2x faster per
tick). The walk table (``walk_table``) is one 8-byte record per node, so that a step touches one
cache line and a 500-tree ensemble stays in the core's L2 (the export's node table and thresholds
are two arrays, 12 bytes a node): int32 ``[nodes, 2]``, ``THRESHOLD`` the split's float32
threshold's bits and ``LINK`` ``split | (left - node) << SPLIT_BITS`` (``split`` the export's
``feature << 1 | 1 if a NaN goes right``). Each leaf is a node that steps to itself: its
threshold is +inf, its split reads the row's extra slot ``xf[k] = -inf`` (``-inf <= +inf`` and
``-inf < +inf``: left) and its left child is itself (offset 0). So every tree of a group takes the
group's deepest walk without a leaf test, and a row without NaN (the usual one, checked once per
tick) skips the NaN test as well. The leaves are then summed in tree order, as ``forest_raw`` /
``xgb_margin`` do: bit for bit the same probabilities. ``xf`` is the row in float32 followed by
that ``-inf`` slot.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.errors import AutoscalpError
from pipeline.models.compiled.evaluators import LEFT, SPLIT, calibrate, xgb_sigmoid
from pipeline.models.compiled.intrinsics import float32_from_bits

WALK_GROUP = 8
THRESHOLD, LINK = 0, 1
SPLIT_BITS = 14  # features up to 8191 (the leaves' split reads slot n_features)
SPLIT_MASK = (1 << SPLIT_BITS) - 1
MAX_OFFSET = (1 << (31 - SPLIT_BITS)) - 1  # a left child at most 131,071 rows after its parent
_INF_BITS = np.float32(np.inf).view(np.int32)


class TreeTooLargeError(AutoscalpError):
    """A tree the walk table cannot encode (a child too far from its parent, or too many features)."""


@njit(cache=True, error_model="numpy")
def _fill_walk_table(nodes, thresholds, n_features, table):
    """``walk_table``'s records into ``table``; returns the largest offset (left - node)."""
    widest = 0
    bits = thresholds.view(np.int32)
    for node in range(nodes.shape[0]):
        left = nodes[node, LEFT]
        if left < 0:
            table[node, THRESHOLD] = _INF_BITS
            table[node, LINK] = n_features << 1
        else:
            offset = left - node
            widest = max(widest, offset)
            table[node, THRESHOLD] = bits[node]
            table[node, LINK] = nodes[node, SPLIT] | (min(offset, MAX_OFFSET) << SPLIT_BITS)
    return widest


def walk_table(nodes: np.ndarray, thresholds: np.ndarray, n_features: int) -> np.ndarray:
    """The export's node table and float32 thresholds (XGBoost: its ``values``) as the walk's
    records (module docstring). Raises ``TreeTooLargeError`` for what 32 bits cannot hold."""
    if (n_features << 1) > SPLIT_MASK:
        raise TreeTooLargeError(f"{n_features} features: the compiled trees take at most {SPLIT_MASK >> 1}")
    table = np.empty((len(nodes), 2), dtype=np.int32)
    widest = _fill_walk_table(np.ascontiguousarray(nodes, dtype=np.int32),
                              np.ascontiguousarray(thresholds, dtype=np.float32), n_features, table)
    if widest > MAX_OFFSET:
        raise TreeTooLargeError(f"a tree with a child {widest} nodes after its parent: the compiled trees "
                                f"take at most {MAX_OFFSET} (fewer or shallower trees)")
    return table


def tree_depths(nodes: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """int64 ``[trees]``: each tree's deepest leaf (children always have larger rows than their
    parent in both exports, so one pass in row order suffices)."""
    depth = np.zeros(len(nodes), dtype=np.int64)
    left = nodes[:, LEFT]
    for node in np.flatnonzero(left >= 0):
        depth[left[node]] = depth[left[node] + 1] = depth[node] + 1
    return np.maximum.reduceat(depth, roots) if len(roots) else depth[:0]


def group_depths(nodes: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """int32 ``[trees // WALK_GROUP]``: the deepest leaf of each full group of trees."""
    full = len(roots) - len(roots) % WALK_GROUP
    return tree_depths(nodes, roots)[:full].reshape(-1, WALK_GROUP).max(axis=1).astype(np.int32)


@njit(cache=True, error_model="numpy", inline="always")
def _xgb_step(table, xf, node, finite):
    n = np.uint64(node)  # unsigned: no negative-index wrap-around test on each load (~2x faster)
    link = table[n, LINK]
    v = xf[np.uint64((link & SPLIT_MASK) >> 1)]
    left = node + (link >> SPLIT_BITS)
    step = left + np.int32(not (v < float32_from_bits(table[n, THRESHOLD])))
    if finite:  # loop-invariant: LLVM keeps one loop without the NaN test
        return step
    return left + (link & 1) if v != v else step


@njit(cache=True, error_model="numpy", inline="always")
def _forest_step(table, xf, node, finite):
    n = np.uint64(node)
    link = table[n, LINK]
    v = xf[np.uint64((link & SPLIT_MASK) >> 1)]
    left = node + (link >> SPLIT_BITS)
    step = left + np.int32(not (v <= float32_from_bits(table[n, THRESHOLD])))
    if finite:
        return step
    return left + (link & 1) if v != v else step


@njit(cache=True, error_model="numpy", inline="always")
def _is_leaf(table, node):
    return (table[node, LINK] >> SPLIT_BITS) == 0


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
            n0 = _xgb_step(table, xf, n0, finite)
            n1 = _xgb_step(table, xf, n1, finite)
            n2 = _xgb_step(table, xf, n2, finite)
            n3 = _xgb_step(table, xf, n3, finite)
            n4 = _xgb_step(table, xf, n4, finite)
            n5 = _xgb_step(table, xf, n5, finite)
            n6 = _xgb_step(table, xf, n6, finite)
            n7 = _xgb_step(table, xf, n7, finite)
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
        while not _is_leaf(table, node):
            node = _xgb_step(table, xf, node, finite)
        margin = margin + values[node]
    return margin


@njit(cache=True, error_model="numpy")
def forest_raw_walk(table, leaf_values, roots, depths, xf, finite):
    """``forest_raw`` over the walk table, eight trees at a time (the sum in tree order)."""
    if finite:
        return _forest_walk(table, leaf_values, roots, depths, xf, True)
    return _forest_walk(table, leaf_values, roots, depths, xf, False)


@njit(cache=True, error_model="numpy", inline="always")
def _forest_walk(table, leaf_values, roots, depths, xf, finite):
    trees = roots.shape[0]
    full = trees - trees % WALK_GROUP
    total = 0.0
    for g in range(0, full, WALK_GROUP):
        n0, n1, n2, n3 = roots[g], roots[g + 1], roots[g + 2], roots[g + 3]
        n4, n5, n6, n7 = roots[g + 4], roots[g + 5], roots[g + 6], roots[g + 7]
        for _ in range(depths[g // WALK_GROUP]):
            n0 = _forest_step(table, xf, n0, finite)
            n1 = _forest_step(table, xf, n1, finite)
            n2 = _forest_step(table, xf, n2, finite)
            n3 = _forest_step(table, xf, n3, finite)
            n4 = _forest_step(table, xf, n4, finite)
            n5 = _forest_step(table, xf, n5, finite)
            n6 = _forest_step(table, xf, n6, finite)
            n7 = _forest_step(table, xf, n7, finite)
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
        while not _is_leaf(table, node):
            node = _forest_step(table, xf, node, finite)
        total += leaf_values[node]
    return total / trees


@njit(cache=True, error_model="numpy")
def _walk_rows(nodes, X):
    """The batch's inputs: each node's depth (children have larger rows than their parent), X in
    float32 with the ``-inf`` slot, and whether each row is free of NaN."""
    n, k = X.shape
    depth = np.zeros(nodes.shape[0], dtype=np.int64)
    for node in range(nodes.shape[0]):
        left = nodes[node, LEFT]
        if left >= 0:
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
    return depth, xf, finite


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
def forest_proba_batch(table, leaf_values, roots, calibration, nodes, X):
    """Row by row the per-tick walk (``forest_raw_walk``: eight trees side by side, the sum in tree
    order), without a call per row: each value is ``forest_proba``'s. ``table``: ``walk_table``'s."""
    depth, xf, finite = _walk_rows(nodes, X)
    depths = _group_depths(depth, roots, nodes.shape[0])
    out = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        out[i] = calibrate(calibration, forest_raw_walk(table, leaf_values, roots, depths, xf[i], finite[i]))
    return out


@njit(cache=True, error_model="numpy")
def xgb_proba_batch(table, values, roots, base_margin, calibration, nodes, X):
    """Row by row the per-tick walk (``xgb_margin_walk``); each row's float32 margin is ``xgb_margin``'s."""
    depth, xf, finite = _walk_rows(nodes, X)
    depths = _group_depths(depth, roots, nodes.shape[0])
    out = np.empty(X.shape[0])
    for i in range(X.shape[0]):
        margin = xgb_margin_walk(table, values, roots, depths, base_margin, xf[i], finite[i])
        out[i] = calibrate(calibration, np.float64(xgb_sigmoid(margin)))
    return out
