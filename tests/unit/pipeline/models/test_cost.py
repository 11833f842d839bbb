"""The serving cost counted per tick: node steps of the trees, as the eight-at-a-time walk takes them."""

from __future__ import annotations

import numpy as np

from pipeline.models.compiled.cost import tree_steps
from pipeline.models.compiled.walks import WALK_GROUP


def chain_tree(depth: int, start: int) -> np.ndarray:
    """A tree ``depth`` levels deep down its left side, laid out as the exports do (siblings side by
    side, children after their parent): the root, its two children, the left child's two, ...;
    child rows numbered from ``start``."""
    nodes = [[1, 0]]
    for level in range(1, depth + 1):
        left_of_level = 2 * level - 1
        if level < depth:
            nodes.append([left_of_level + 2, 0])  # splits again
        else:
            nodes.append([-1, -1])
        nodes.append([-1, -1])  # the sibling leaf
    table = np.array(nodes, dtype=np.int32)
    table[table[:, 0] >= 0, 0] += start
    return table


def test_groups_walk_their_deepest_tree_and_the_rest_their_own():
    depths = [1, 3, 2, 2, 1, 1, 1, 1] + [2, 5]  # one full group (deepest 3) and two trees after it
    assert len(depths) == WALK_GROUP + 2
    parts, roots, start = [], [], 0
    for d in depths:
        tree = chain_tree(d, start)
        parts.append(tree)
        roots.append(start)
        start += len(tree)
    nodes, roots = np.concatenate(parts), np.array(roots, dtype=np.int32)
    assert tree_steps(nodes, roots) == 3 * WALK_GROUP + 2 + 5
    assert tree_steps(nodes[:0], roots[:0]) == 0
