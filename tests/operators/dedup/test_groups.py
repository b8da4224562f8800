"""Duplicate grouping alone: one link per pair, components, and who is kept and matched."""

from __future__ import annotations

import numpy as np

from seir.operators.dedup.groups import components, resolve, strongest_links


def test_one_link_per_pair_the_most_certain_method() -> None:
    a, b = np.array([3, 1, 1, 5]), np.array([1, 3, 2, 6])
    assert strongest_links(a, b, np.array([2, 0, 1, 1])).tolist() == [1, 2, 3]
    assert strongest_links(np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([])).tolist() == []


def test_components_are_rooted_at_their_best_rank() -> None:
    roots = components(np.array([9, 4, 7, 2]), np.array([4, 7, 2, 8]))
    assert roots == {9: 2, 4: 2, 7: 2, 2: 2, 8: 2}


def test_each_dropped_node_names_the_keeper_and_its_best_ranked_neighbour() -> None:
    # 1 - 5 - 3 and 5 - 4: keeper 1; 3 and 4 were matched through 5, 5 through 1. 8 - 9 is its own group.
    a, b = np.array([5, 3, 4, 9]), np.array([1, 5, 5, 8])
    drops = resolve(a, b)
    assert drops.node.tolist() == [3, 4, 5, 9]
    assert drops.keeper.tolist() == [1, 1, 1, 8]
    assert drops.match.tolist() == [5, 5, 1, 8]
    assert drops.link.tolist() == [1, 2, 0, 3]
