"""MinHash over word shingles, with LSH banding tuned to a Jaccard threshold.

Each shingle hash ``x`` (32 bits, see ``shingles``) goes through ``num_perm`` affine maps ``(a * x + b) mod 2**32``
at once, as one ``(num_perm, shingles)`` numpy product, and each text keeps the minimum per map. The modulus is
2**32 with odd ``a`` rather than a prime: the map is then a bijection on 32-bit values (it cannot merge two shingles,
the collision bias datasketch's old prime-and-truncate scheme had), it runs in uint32 lanes, and a prime modulus
needs 64-bit products plus a reduction step, measured 5x slower per element in numpy. Randomness comes from the
shingle hash itself; the maps only decorrelate the ``num_perm`` minima.

Deciding. The estimate (the share of equal minima) has sd ``sqrt(J (1 - J) / num_perm)``, 0.035 at J = 0.8 with 128
permutations, so on its own it puts pairs within ~0.05 of the threshold on the wrong side often. The rule is:

- candidates: the LSH bands are the shape with the fewest false positives among those that make a pair at exactly
  the threshold a candidate with probability >= ``candidate_recall`` (16 bands of 6 rows: 0.992 at J = 0.8);
- a candidate whose estimate is more than ``exact_margin`` sds (taken at the threshold) from the threshold is
  decided by its estimate: at 3 sds a pair at the threshold lands there with probability ~0.001, and a pair farther
  away less often still;
- every other candidate is decided by the exact Jaccard of the two texts' shingle-hash sets (``sketch_folded(...,
  members=True)`` gives each text's shingle hashes; the engine stores them beside the signature, and sorts only
  those it checks), which equals the Jaccard of the shingle sets themselves unless two distinct shingles share a
  32-bit hash (~1e-5 per pair of 200-shingle texts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from seir.operators.base import register
from seir.operators.dedup.common import Ragged, Sketches, SketchMethod, Skip, stable_uint64
from seir.operators.dedup.lsh import band_keys, choose_bands
from seir.operators.dedup.shingles import fold, shingle_hashes, slices

_CHUNK = 8192  # shingles per step: a (128, 8192) uint32 block, 4 MiB, measured the best trade of cache and calls
_TEXTS_PER_STEP = 1024  # texts folded at a time: the folded copies never all exist at once


@register
@dataclass(frozen=True)
class MinHashDedup(SketchMethod):
    """Near-duplicate texts: Jaccard similarity of word-shingle sets >= ``threshold`` (estimated, or exact where the
    estimate is too close to call)."""

    name: ClassVar[str] = "minhash"
    reads: ClassVar[tuple[str, ...]] = ("dialogue.text",)
    sketch_dtype: ClassVar[type] = np.uint32

    threshold: float = 0.8
    num_perm: int = 128
    shingle_size: int = 3
    seed: int = 1
    # A pair at the threshold becomes a candidate with at least this probability (see the module docstring): 16
    # bands of 6 rows at 0.99, where the former 14 of 9 gave 0.87 and lost 7% of the pairs at 0.8-0.85.
    candidate_recall: float = 0.99
    # Estimates within this many sds of the threshold are settled by exact Jaccard (two thirds of the candidates on
    # the benchmark corpus, whose planted edits sit around the threshold).
    exact_margin: float = 3.0

    def __post_init__(self) -> None:
        if (not 0.0 < self.threshold < 1.0 or self.num_perm < 2 or self.shingle_size < 1
                or not 0.0 < self.candidate_recall < 1.0 or self.exact_margin < 0.0):
            raise ValueError("minhash needs 0 < threshold < 1, num_perm >= 2, shingle_size >= 1, "
                             f"0 < candidate_recall < 1, exact_margin >= 0; got {self}")

    @cached_property
    def bands(self) -> tuple[int, int]:
        """(bands, rows) of the LSH step."""
        return choose_bands(self.threshold, self.num_perm, min_recall=self.candidate_recall, false_negative_weight=0.0)

    @property
    def min_similarity(self) -> float:
        return self.threshold

    def config(self) -> dict[str, Any]:
        return {"operator": self.name, **dataclasses.asdict(self), "bands": list(self.bands)}

    @cached_property
    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        a = stable_uint64(self.seed, "minhash.a", self.num_perm).astype(np.uint32) | np.uint32(1)
        b = stable_uint64(self.seed, "minhash.b", self.num_perm).astype(np.uint32)
        return a[:, None], b[:, None]

    def sketch(self, texts: Sequence[str | bytes]) -> Sketches:
        """Signatures (uint32, ``num_perm`` wide) with each text's shingle hashes as members, for the exact check;
        texts of fewer words than ``shingle_size`` are skipped. Bytes are taken as normalised already
        (``shingles.normalized_utf8``, as the engine has them)."""
        parts = ((lo, self.sketch_folded([text if isinstance(text, bytes) else fold(text)
                                          for text in texts[lo:lo + _TEXTS_PER_STEP]], members=True))
                 for lo in range(0, len(texts), _TEXTS_PER_STEP))
        return Sketches.gather(parts, len(texts), self._empty)

    def sketch_folded(self, texts: Sequence[bytes], *, members: bool = False) -> Sketches:
        """``sketch`` of texts already passed through ``shingles.fold`` or ``shingles.normalized_utf8``; with
        ``members``, also each sketched text's shingle hashes, for the exact check."""
        parts = ((lo, self._sketch_slice(texts[lo:hi], members)) for lo, hi in slices(texts))
        return Sketches.gather(parts, len(texts), self._empty)

    @property
    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.num_perm), dtype=np.uint32)

    def _sketch_slice(self, texts: Sequence[bytes], members: bool) -> Sketches:
        shingles = shingle_hashes(texts, self.shingle_size)
        ok = np.flatnonzero(shingles.words >= self.shingle_size)
        skips = tuple(
            Skip(i, "empty text" if n == 0 else f"{n} word(s), fewer than the shingle size {self.shingle_size}")
            for i, n in enumerate(shingles.words.tolist()) if n < self.shingle_size
        )
        offsets = np.append(shingles.offsets[ok], shingles.offsets[-1])  # skipped texts have no shingles
        shingle_rows = Ragged(shingles.values, offsets) if members else None
        return Sketches(self._minima(shingles.values, offsets), ok, skips, shingle_rows)

    def _minima(self, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Per text (each has >= 1 shingle), the minimum of every affine map over its shingles."""
        a, b = self._maps
        minima = np.full((self.num_perm, len(offsets) - 1), np.iinfo(np.uint32).max, dtype=np.uint32)
        block = np.empty((self.num_perm, _CHUNK), dtype=np.uint32)
        for lo in range(0, len(x), _CHUNK):
            hi = min(lo + _CHUNK, len(x))
            first = int(np.searchsorted(offsets[1:], lo, side="right"))  # texts overlapping [lo, hi)
            end = int(np.searchsorted(offsets[:-1], hi, side="left"))
            view = block[:, : hi - lo]
            np.multiply(a, x[lo:hi], out=view)
            view += b
            part = np.minimum.reduceat(view, np.maximum(offsets[first:end], lo) - lo, axis=1)
            np.minimum(minima[:, first:end], part, out=minima[:, first:end])
        return np.ascontiguousarray(minima.T)

    def band_keys(self, rows: np.ndarray) -> np.ndarray:
        return band_keys(rows, *self.bands)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Estimated Jaccard similarity: the share of minima the two signatures have in common."""
        return (a == b).mean(axis=1)

    def unsure(self, similarity: np.ndarray) -> np.ndarray:
        """Which estimates are too close to the threshold to decide on: the exact check settles them (on the
        members ``sketch`` gave)."""
        sd = np.sqrt(self.threshold * (1.0 - self.threshold) / self.num_perm)
        return np.abs(similarity - self.threshold) <= self.exact_margin * sd
