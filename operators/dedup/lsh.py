"""Locality-sensitive banding.

A sketch is cut into ``bands`` groups of ``rows`` values; two items become a candidate pair when every value of at
least one band agrees. If one value agrees with probability ``p``, a pair collides with probability
``1 - (1 - p**rows)**bands``: an S-curve whose step ``choose_bands`` places at the similarity threshold.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from seir.operators.dedup.common import mix64


def collision_probability(p: np.ndarray, bands: int | np.ndarray, rows: int | np.ndarray) -> np.ndarray:
    return 1.0 - (1.0 - p**rows) ** bands


def choose_bands(
    threshold: float,
    num_hashes: int,
    *,
    agreement: Callable[[np.ndarray], np.ndarray] | None = None,
    floor: float = 0.0,
    false_negative_weight: float = 0.5,
    min_recall: float = 0.0,
    grid: int = 501,
) -> tuple[int, int]:
    """The ``(bands, rows)``, ``bands * rows <= num_hashes``, that minimise

    ``(1 - w) * mean false-positive rate over [floor, threshold] + w * mean false-negative rate over [threshold, 1]``

    where ``w`` is ``false_negative_weight`` and ``agreement`` maps a similarity to the probability that one hash
    value agrees (the identity for MinHash and Jaccard). Mean rates, not the raw areas that e.g. datasketch
    integrates: raw areas weigh each side by its width, so at threshold 0.8 false positives would count 4:1 before
    any weight is applied, and at cosine 0.95 almost nothing but false positives would count.

    Only shapes under which a pair at exactly the threshold collides with probability >= ``min_recall`` take part
    (if none does, those with the highest such probability).
    """
    below = np.linspace(floor, threshold, grid)
    above = np.linspace(threshold, 1.0, grid)
    agree = (lambda s: s) if agreement is None else agreement
    shapes = np.array([(b, r) for r in range(1, num_hashes + 1) for b in range(1, num_hashes // r + 1)])
    bands, rows = shapes[:, :1], shapes[:, 1:]
    false_pos = np.trapezoid(collision_probability(agree(below), bands, rows), below, axis=1) / (threshold - floor)
    false_neg = np.trapezoid(1.0 - collision_probability(agree(above), bands, rows), above, axis=1) / (1.0 - threshold)
    cost = (1.0 - false_negative_weight) * false_pos + false_negative_weight * false_neg
    at_threshold = collision_probability(agree(np.array(threshold)), bands[:, 0], rows[:, 0])
    cost[at_threshold < min(min_recall, at_threshold.max())] = np.inf
    best_bands, best_rows = shapes[int(np.argmin(cost))]
    return int(best_bands), int(best_rows)


def band_keys(values: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(n, >= bands * rows)`` integer sketch -> ``(n, bands)`` uint64 buckets: each band's values hashed in order."""
    grouped = values[:, : bands * rows].astype(np.uint64).reshape(len(values), bands, rows)
    keys = np.zeros((len(values), bands), dtype=np.uint64)
    for row in range(rows):
        keys = mix64(keys ^ grouped[:, :, row])
    return keys
