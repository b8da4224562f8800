"""Duplicate groups: connected components of the duplicate graph, and which item of a group to keep.

Nodes are ranks: 0 is the item to prefer above all others. The engine ranks by the documented rule (highest
combined score, then earliest order, then smallest dialogue id), so within a component the keeper is simply its
smallest rank, and every other member is dropped, naming the best-ranked neighbour it was directly linked to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Drops:
    """Parallel arrays, one entry per dropped node: its ``keeper``, and the ``match`` it was linked to by link
    ``link`` (an index into the links given to ``resolve``)."""

    node: np.ndarray
    keeper: np.ndarray
    match: np.ndarray
    link: np.ndarray


def strongest_links(a: np.ndarray, b: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Indices of the links to keep: one per pair of nodes, the one with the smallest ``priority``."""
    low, high = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((priority, high, low))
    pair = np.stack([low[order], high[order]], axis=1)
    first = np.r_[True, (pair[1:] != pair[:-1]).any(axis=1)][: len(order)]
    return np.sort(order[first])


def components(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    """Node -> smallest node of its component, for every node on a link (union-find with path halving)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        root_x, root_y = find(x), find(y)
        if root_x != root_y:  # the smaller root wins, so every root is its component's best rank
            parent[max(root_x, root_y)] = min(root_x, root_y)
    return {x: find(x) for x in parent}


def resolve(a: np.ndarray, b: np.ndarray) -> Drops:
    """Who is dropped in favour of whom, given links ``a[i] -- b[i]`` (one per pair, see ``strongest_links``)."""
    roots = components(a, b)
    node, match = np.concatenate([a, b]), np.concatenate([b, a])
    link = np.tile(np.arange(len(a)), 2)
    order = np.lexsort((match, node))  # per node, its best-ranked neighbour first
    node, match, link = node[order], match[order], link[order]
    first = np.r_[True, node[1:] != node[:-1]][: len(node)]
    node, match, link = node[first], match[first], link[first]
    keeper = np.array([roots[x] for x in node.tolist()], dtype=np.int64)
    dropped = node != keeper
    return Drops(node=node[dropped], keeper=keeper[dropped], match=match[dropped], link=link[dropped])
