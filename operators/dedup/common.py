"""What the near-duplicate methods share: stable pseudo-random numbers, a 64-bit mixer, skips, ragged rows, and the
base classes the engine's global pass drives (sketch -> band keys -> candidate pairs -> similarity).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import xxhash

from seir.operators.base import Operator

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_LOW_32 = np.uint64(32)
_JACCARD_CHUNK = 1 << 20  # set members compared per numpy step (a few 8 MiB temporaries)


@dataclass(frozen=True)
class Skip:
    """An input a method could not judge: ``index`` is its position in the batch given to the method."""

    index: int
    reason: str


@dataclass(frozen=True)
class Ragged:
    """Rows of uint32 values of different lengths: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray  # uint32
    offsets: np.ndarray  # int64, one more than the rows

    @staticmethod
    def concatenate(parts: list[Ragged]) -> Ragged:
        shifts = np.cumsum([0] + [len(part.values) for part in parts])
        offsets = [part.offsets[:-1] + shift for part, shift in zip(parts, shifts[:-1], strict=True)]
        return Ragged(np.concatenate([np.zeros(0, np.uint32)] + [part.values for part in parts]),
                      np.concatenate([*offsets, shifts[-1:]]).astype(np.int64))

    def _tagged(self, rows: np.ndarray) -> np.ndarray:
        """The values of ``rows`` one after another, each tagged with its position in ``rows`` in the high 32 bits:
        sorting this orders rows and the values within them in one pass."""
        sizes = np.diff(self.offsets)[rows]
        starts = np.cumsum(sizes) - sizes
        at = np.arange(sizes.sum()) + np.repeat(self.offsets[rows] - starts, sizes)
        return (np.repeat(np.arange(len(rows), dtype=np.uint64), sizes) << _LOW_32) | self.values[at]

    def as_sets(self) -> Ragged:
        """Each row sorted and without repeats, all rows in one sort."""
        tagged = self._tagged(np.arange(len(self.offsets) - 1))
        tagged.sort()
        first = np.ones(len(tagged), dtype=bool)
        np.not_equal(tagged[1:], tagged[:-1], out=first[1:])
        tagged = tagged[first]
        starts = np.searchsorted(tagged >> _LOW_32, np.arange(len(self.offsets), dtype=np.uint64))
        return Ragged(tagged.astype(np.uint32), starts.astype(np.int64))

    def jaccard(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Exact Jaccard similarity of rows ``a[k]`` and ``b[k]``, rows being sets (``as_sets``; 1.0 for two empty
        ones): each value of ``b[k]`` is looked up in ``a[k]`` by one binary search over all the pairs at once."""
        sizes = np.diff(self.offsets)
        per_pair = sizes[a] + sizes[b]
        ends = np.cumsum(per_pair)
        both = np.zeros(len(a))
        lo = 0
        while lo < len(a):  # about _JACCARD_CHUNK values at a time, at least one pair
            hi = max(lo + 1, int(np.searchsorted(ends, ends[lo] - per_pair[lo] + _JACCARD_CHUNK, side="right")))
            left, right = self._tagged(a[lo:hi]), self._tagged(b[lo:hi])  # sorted, as the rows are
            found = np.searchsorted(left, right)
            hit = found < len(left)
            hit[hit] = left[found[hit]] == right[hit]
            both[lo:hi] = np.bincount((right >> _LOW_32).astype(np.intp), weights=hit, minlength=hi - lo)
            lo = hi
        union = per_pair - both
        return np.divide(both, union, out=np.ones(len(a)), where=union > 0)


@dataclass(frozen=True)
class Sketches:
    """A method's sketches of a batch: ``rows[i]`` sketches input ``index[i]``; inputs it could not judge are in
    ``skips`` instead. Where a method gives ``members``, its row ``i`` holds the members of the set that ``rows[i]``
    estimates (in any order, possibly repeated), for an exact check."""

    rows: np.ndarray
    index: np.ndarray
    skips: tuple[Skip, ...] = ()
    members: Ragged | None = None

    @staticmethod
    def gather(parts: Iterable[tuple[int, Sketches]], count: int, empty: np.ndarray) -> Sketches:
        """The sketches of a batch of ``count`` inputs from those of its consecutive slices, given as ``(start,
        sketches)``, copied into one array as they come so that the slices never all exist at once. ``empty`` is a
        zero-row array of the sketch's width and type. Members are gathered when every slice has them."""
        rows = np.empty((count, empty.shape[1]), dtype=empty.dtype)
        filled, index, skips = 0, [np.zeros(0, dtype=np.int64)], []
        members: list[Ragged | None] = []
        for start, part in parts:
            rows[filled:filled + len(part.rows)] = part.rows
            filled += len(part.rows)
            index.append(part.index + start)
            skips += [Skip(skip.index + start, skip.reason) for skip in part.skips]
            members.append(part.members)
        given = [part for part in members if part is not None]
        gathered = Ragged.concatenate(given) if members and len(given) == len(members) else None
        return Sketches(rows[:filled], np.concatenate(index), tuple(skips), gathered)


InputT = TypeVar("InputT")


def sketch_each(
    inputs: Iterable[InputT], width: int, dtype: type, row: Callable[[InputT], np.ndarray | str]
) -> Sketches:
    """Sketches of inputs judged one at a time: ``row`` returns an input's sketch row, or the reason to skip it."""
    rows, index, skips = [], [], []
    for i, item in enumerate(inputs):
        result = row(item)
        if isinstance(result, str):
            skips.append(Skip(i, result))
        else:
            rows.append(result)
            index.append(i)
    matrix = np.array(rows, dtype=dtype).reshape(len(index), width)
    return Sketches(matrix, np.array(index, dtype=np.int64), tuple(skips))


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection on uint64 in which every output bit depends on every input bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stable_uint64(seed: int, label: str, n: int) -> np.ndarray:
    """``n`` pseudo-random uint64 that depend only on ``(seed, label)``.

    Not numpy's generators: their streams may change between numpy versions, and sketches stored by an earlier run
    must stay comparable with new ones.
    """
    base = np.uint64(xxhash.xxh3_64_intdigest(label.encode(), seed=seed))
    return mix64(base + np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)


def blob_key(data: np.ndarray) -> str:
    """Content key of an array's bytes (xxh3_128 hex), e.g. of an embedding."""
    return xxhash.xxh3_128_hexdigest(np.ascontiguousarray(data).tobytes())


# The inputs the global pass gives dedup methods; a method's ``reads`` names the one it judges.
INPUTS = {
    "dialogue.text": "the dialogue's text, normalised (NFKC, case folded, whitespace collapsed) as UTF-8 bytes",
    "turn.image": "the encoded bytes of one image; a dialogue matches another when every image of each has a match "
                  "in the other",
    "dialogue.embedding": "the dialogue's embedding, made by the job's embed role",
}


class DedupMethod(Operator):
    """A dedup method as a job names it (``dedup.methods``). The exact methods compare the content keys the global
    pass gives every input; near-duplicate methods are ``SketchMethod``s."""

    kind: ClassVar[str] = "dedup"


class SketchMethod(DedupMethod):
    """A near-duplicate method as the global pass drives it, once each input has a sketch row (``Sketches.rows``).

    ``sketch`` gets distinct inputs of the kind ``reads`` names (one of ``INPUTS``); ``band_keys`` gives each row a
    bucket per band, so that similar rows share a bucket in at least one band with high probability; ``similarity``
    verifies candidate pairs row by row, and a pair is a duplicate when it reaches ``min_similarity``. A plugin
    method (``module:Class`` in ``dedup.methods``) subclasses this and is built with its defaults.
    """

    sketch_dtype: ClassVar[type]  # of ``Sketches.rows``, so stored sketches can be read back

    @property
    def min_similarity(self) -> float:
        raise NotImplementedError

    def sketch(self, inputs: Sequence[Any]) -> Sketches:
        raise NotImplementedError

    def band_keys(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def unsure(self, similarity: np.ndarray) -> np.ndarray | None:
        """Which estimated similarities are too close to the threshold to decide on: the pass settles them by the
        exact Jaccard of the members the sketches gave. None when every similarity is exact."""
        return None
