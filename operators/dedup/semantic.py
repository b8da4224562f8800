"""Semantic near-duplicates: cosine similarity of embeddings (computed by the engine's ``embed`` role) >= threshold.

Candidates come from random-hyperplane LSH: each of ``num_bits`` hyperplanes gives one bit (the side of the plane a
vector falls on); two vectors at angle ``theta`` agree on a bit with probability ``1 - theta / pi``, so banding the
bits gives the same S-curve as MinHash, with ``(bands, rows)`` chosen by ``lsh.choose_bands`` for that agreement
curve. Pairs are verified with the exact cosine, so the LSH step only trades recall near the threshold for speed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from seir.operators.base import register
from seir.operators.dedup.common import Sketches, SketchMethod, sketch_each, stable_uint64
from seir.operators.dedup.lsh import band_keys, choose_bands


def _bit_agreement(cosine: np.ndarray) -> np.ndarray:
    return 1.0 - np.arccos(np.clip(cosine, -1.0, 1.0)) / np.pi


def _uniform(seed: int, label: str, n: int) -> np.ndarray:
    """Stable uniforms in (0, 1]: the top 53 bits of ``stable_uint64``."""
    return ((stable_uint64(seed, label, n) >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53


def _unit(vector: Sequence[float] | None, dim: int) -> np.ndarray | str:
    """The vector scaled to length 1, or why it cannot be."""
    try:
        array = np.asarray(vector if vector is not None else [], dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return "embedding is not numeric"
    if array.size == 0:
        return "no embedding"
    if array.size != dim:
        return f"embedding has {array.size} values, expected {dim}"
    if not np.isfinite(array).all():
        return "embedding has non-finite values"
    peak = np.abs(array).max()
    if peak == 0.0:
        return "embedding is all zeros"
    scaled = array / peak  # first, so that huge values cannot overflow the norm
    return scaled / np.linalg.norm(scaled)


@register
@dataclass(frozen=True)
class SemanticDedup(SketchMethod):
    """Near-duplicate meaning: embedding cosine >= ``threshold``."""

    name: ClassVar[str] = "semantic"
    roles: ClassVar[dict[str, tuple[str, ...]]] = {"embed": ("embed",)}  # the engine embeds each dialogue
    reads: ClassVar[tuple[str, ...]] = ("dialogue.embedding",)
    sketch_dtype: ClassVar[type] = np.float32

    threshold: float = 0.95
    dim: int = 384  # all-MiniLM-L6-v2, the default embed model
    # 24 bands of 21 bits: a pair at cosine 0.95 becomes a candidate with p=0.93, at 0.97 with p=0.99, at 0.5 with
    # p=0.005 (exact cosine then removes it).
    num_bits: int = 512
    seed: int = 1
    false_negative_weight: float = 0.7

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0 or self.num_bits < 1 or self.dim < 1:
            raise ValueError(f"semantic needs 0 < threshold < 1, num_bits >= 1 and dim >= 1; got {self}")

    @property
    def min_similarity(self) -> float:
        return self.threshold

    def config(self) -> dict[str, Any]:
        return {"operator": self.name, **dataclasses.asdict(self), "bands": list(self.bands)}

    @cached_property
    def bands(self) -> tuple[int, int]:
        """(bands, rows) over the hyperplane bits; similarities below 0 are taken as never near the threshold."""
        return choose_bands(self.threshold, self.num_bits, agreement=_bit_agreement,
                            false_negative_weight=self.false_negative_weight)

    def sketch(self, vectors: Sequence[Sequence[float] | None]) -> Sketches:
        """Unit-length float32 rows; missing, wrongly sized, non-finite or zero vectors are skipped."""
        return sketch_each(vectors, self.dim, np.float32, lambda vector: _unit(vector, self.dim))

    @cached_property
    def _hyperplanes(self) -> np.ndarray:
        """``(num_bits, dim)`` Gaussian normals (Box-Muller over stable uniforms: identical on every machine)."""
        n = self.num_bits * self.dim
        radius = np.sqrt(-2.0 * np.log(_uniform(self.seed, "semantic.r", n)))
        angle = 2.0 * np.pi * _uniform(self.seed, "semantic.theta", n)
        return (radius * np.cos(angle)).reshape(self.num_bits, self.dim).astype(np.float32)

    def band_keys(self, rows: np.ndarray) -> np.ndarray:
        bits = (rows @ self._hyperplanes.T) > 0
        return band_keys(bits, *self.bands)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
