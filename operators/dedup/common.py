"""What the near-duplicate methods share: stable pseudo-random numbers, a 64-bit mixer, skips, and the protocol the
engine's global pass drives (sketch -> band keys -> candidate pairs -> similarity).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import xxhash

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class Skip:
    """An input a method could not judge: ``index`` is its position in the batch given to the method."""

    index: int
    reason: str


@dataclass(frozen=True)
class Sketches:
    """A method's sketches of a batch: ``rows[i]`` sketches input ``index[i]``; inputs it could not judge are in
    ``skips`` instead."""

    rows: np.ndarray
    index: np.ndarray
    skips: tuple[Skip, ...] = ()

    @staticmethod
    def gather(parts: Iterable[tuple[int, Sketches]], count: int, empty: np.ndarray) -> Sketches:
        """The sketches of a batch of ``count`` inputs from those of its consecutive slices, given as ``(start,
        sketches)``, copied into one array as they come so that the slices never all exist at once. ``empty`` is a
        zero-row array of the sketch's width and type."""
        rows = np.empty((count, empty.shape[1]), dtype=empty.dtype)
        filled, index, skips = 0, [np.zeros(0, dtype=np.int64)], []
        for start, part in parts:
            rows[filled:filled + len(part.rows)] = part.rows
            filled += len(part.rows)
            index.append(part.index + start)
            skips += [Skip(skip.index + start, skip.reason) for skip in part.skips]
        return Sketches(rows[:filled], np.concatenate(index), tuple(skips))


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


class SketchMethod(Protocol):
    """A near-duplicate method as the global pass drives it, once each input has a sketch row (``Sketches.rows``).

    ``band_keys`` gives each row a bucket per band, so that similar rows share a bucket in at least one band with high
    probability; ``similarity`` verifies candidate pairs row by row, and a pair is a duplicate when it reaches
    ``min_similarity``.
    """

    name: ClassVar[str]
    sketch_dtype: ClassVar[type]  # of ``Sketches.rows``, so stored sketches can be read back

    @property
    def min_similarity(self) -> float: ...

    def band_keys(self, rows: np.ndarray) -> np.ndarray: ...

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...

    def config(self) -> dict[str, Any]: ...
