"""Texts -> case-folded UTF-8 -> hashed word shingles, a whole batch at a time.

Words are what ``seir.engine.keys.normalize_text`` leaves between single spaces (NFKC, case folded, split on
whitespace; a test holds the two equal). ``normalize`` builds that text with split/join instead of a regex, 3x
faster. ``fold`` does only what shingling needs from Python: for ASCII text, which NFKC leaves alone and whose case
folding is ``lower()``, it leaves the whitespace to the byte scan below and so builds no str per word; other text
is normalised, since Unicode has whitespace beyond ASCII.

A word's hash is a polynomial over its bytes mod 2**64, read off prefix sums over the whole batch (so a word hashes
the same wherever it stands); a shingle's hash combines its ``size`` word hashes as another polynomial. Hashing
every shingle of a batch is thus a few numpy passes over the bytes instead of a Python call and a str per shingle
(most of datasketch's cost). SplitMix64's finaliser spreads each value and the top 32 bits are kept: plenty for
sets of thousands of shingles, and half the work in the permutation step.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from seir.operators.dedup.common import mix64

_BASE = 0x100000001B3 * 2 + 1  # odd, hence invertible mod 2**64
_BASE_INVERSE = pow(_BASE, -1, 1 << 64)
_WORD_BASE = np.uint64(0x9E3779B97F4A7C15)  # combines word hashes into a shingle hash
_SEPARATOR = b"\xff"  # never occurs in UTF-8, so it can stand between texts in one buffer
_SLICE_BYTES = 1 << 18  # texts are best hashed in slices of about this size: numpy temporaries stay in cache


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def fold(text: str) -> bytes:
    """The text as shingling needs it: NFKC and case folded; whitespace runs may be left (the byte scan skips them)."""
    return text.lower().encode() if text.isascii() else normalize(text).encode()


def _word_bytes(data: np.ndarray) -> np.ndarray:
    """Which bytes belong to words: all but the separator and the ASCII whitespace ``str.split`` splits on
    (tab, line feed, vertical tab, form feed, carriage return, 0x1c-0x1f, space)."""
    return ((data > 32) & (data != _SEPARATOR[0])) | (data < 9) | ((data > 13) & (data < 28))


@dataclass(frozen=True)
class ShingleHashes:
    """Text ``i`` of the batch has ``words[i]`` words and the shingle hashes ``values[offsets[i]:offsets[i + 1]]``."""

    words: np.ndarray  # int64
    values: np.ndarray  # uint32
    offsets: np.ndarray  # int64, len(texts) + 1


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``base**i`` and ``base**-i`` mod 2**64 for i < n (cumprod wraps mod 2**64, as intended)."""
    powers = np.repeat(np.array([[_BASE], [_BASE_INVERSE]], dtype=np.uint64), n, axis=1)
    powers[:, 0] = 1
    table = np.cumprod(powers, axis=1)
    return table[0], table[1]


_cached_power_tables = functools.lru_cache(maxsize=2)(_power_tables)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    size_class = 1 << max(16, (n - 1).bit_length())
    return _cached_power_tables(size_class) if size_class <= 2 * _SLICE_BYTES else _power_tables(n)


def slices(texts: Sequence[bytes], limit: int = _SLICE_BYTES) -> Iterator[tuple[int, int]]:
    """Consecutive ``(lo, hi)`` ranges of texts of about ``limit`` bytes each (a longer text alone)."""
    lo, total = 0, 0
    for hi, text in enumerate(texts, start=1):
        total += len(text) + 1
        if total >= limit or hi == len(texts):
            yield lo, hi
            lo, total = hi, 0


def shingle_hashes(folded: Sequence[bytes], size: int) -> ShingleHashes:
    """Hashes of the ``size``-word shingles of each text (given by ``fold`` or ``normalize``, as UTF-8); texts of
    fewer than ``size`` words get none. Give it a slice (``slices``) at a time: its temporaries are 20x its bytes."""
    data = np.frombuffer(_SEPARATOR + _SEPARATOR.join(folded) + _SEPARATOR, dtype=np.uint8)
    edges = np.diff(_word_bytes(data).view(np.int8), prepend=np.int8(0), append=np.int8(0))
    word_start, word_end = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    first_word = np.searchsorted(word_start, np.flatnonzero(data == _SEPARATOR[0]))  # per text, and one past the last
    words = np.diff(first_word)

    powers, inverse_powers = _powers(len(data) + 1)
    prefix = np.zeros(len(data) + 1, dtype=np.uint64)
    np.cumsum((data + np.uint64(1)) * powers[: len(data)], out=prefix[1:])  # +1: a NUL byte still counts
    word_hash = (prefix[word_end] - prefix[word_start]) * inverse_powers[word_start]

    counts = np.maximum(words - size + 1, 0)
    text_of_word = np.repeat(np.arange(len(words)), words)
    position = np.arange(len(word_start)) - first_word[text_of_word]
    starts = np.flatnonzero(position < counts[text_of_word])
    shingle = word_hash[starts]
    for offset in range(1, size):
        shingle = shingle * _WORD_BASE + word_hash[starts + offset]
    values = (mix64(shingle) >> np.uint64(32)).astype(np.uint32)
    return ShingleHashes(words=words, values=values, offsets=np.concatenate(([0], np.cumsum(counts))))
