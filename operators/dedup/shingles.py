"""Texts -> case-folded UTF-8 -> hashed word shingles, a whole batch at a time.

Words are what ``seir.engine.keys.normalize_text`` leaves between single spaces (NFKC, case folded, split on
whitespace; tests hold all three forms below equal to it). ``normalize`` builds that text with split/join instead
of a regex, 3x faster. ASCII text, the common case, has faster paths, since NFKC leaves it alone, its case folding
is ``lower()`` and its whitespace is a fixed set of bytes: ``normalized_utf8`` maps that set to spaces and collapses
runs with a byte regex (2x faster again; the engine keys texts by it), and ``fold`` does only the case folding,
leaving whitespace to the byte scan below (8x). Other text is normalised, as Unicode has whitespace beyond ASCII.

A word's hash is a polynomial over its bytes mod 2**64, read off prefix sums over the whole batch (so a word hashes
the same wherever it stands); a shingle's hash combines its ``size`` word hashes as another polynomial. Hashing
every shingle of a batch is thus a few numpy passes over the bytes instead of a Python call and a str per shingle
(most of datasketch's cost). SplitMix64's finaliser spreads each value and the top 32 bits are kept: plenty for
sets of thousands of shingles, and half the work in the permutation step. The polynomial is not collision-resistant
against text crafted to collide (a string hash mod 2**64 can be attacked); generated dialogues are not crafted, and
exact-duplicate keys use xxh3_128 of the whole text.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seir.operators.dedup.common import mix64

_BASE = 0x100000001B3 * 2 + 1  # odd, hence invertible mod 2**64
_BASE_INVERSE = pow(_BASE, -1, 1 << 64)
_WORD_BASE = np.uint64(0x9E3779B97F4A7C15)  # combines word hashes into a shingle hash
_SEPARATOR = b"\xff"  # never occurs in UTF-8, so it can stand between texts in one buffer
_SLICE_BYTES = 1 << 18  # texts are best hashed in slices of about this size: numpy temporaries stay in cache
_ASCII_WHITESPACE = b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "  # what str.split() splits ASCII text on
_ASCII_WHITESPACE_TO_SPACE = bytes.maketrans(_ASCII_WHITESPACE, b" " * len(_ASCII_WHITESPACE))
_SPACE_RUNS = re.compile(b"  +")


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def normalized_utf8(text: str) -> bytes:
    """``normalize(text)`` as UTF-8."""
    if not text.isascii():
        return normalize(text).encode()
    return _SPACE_RUNS.sub(b" ", text.lower().encode().translate(_ASCII_WHITESPACE_TO_SPACE)).strip(b" ")


def fold(text: str) -> bytes:
    """The text as shingling needs it: NFKC and case folded; whitespace runs may be left (the byte scan skips them)."""
    return text.lower().encode() if text.isascii() else normalize(text).encode()


def _word_bytes(data: np.ndarray) -> np.ndarray:
    """Which bytes belong to words: all but the separator and ``_ASCII_WHITESPACE`` (9-13, 28-32)."""
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


@functools.cache
def _shared_power_tables() -> tuple[np.ndarray, np.ndarray]:
    return _power_tables(2 * _SLICE_BYTES)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Power tables of at least ``n`` entries: shared ones for a usual slice, fresh ones for one huge text."""
    return _shared_power_tables() if n <= 2 * _SLICE_BYTES else _power_tables(n)


def slices(texts: Sequence[bytes], limit: int = _SLICE_BYTES) -> list[tuple[int, int]]:
    """Consecutive ``(lo, hi)`` ranges of texts of about ``limit`` bytes each (a longer text alone)."""
    ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1)
    cuts = np.unique(np.searchsorted(ends, np.arange(limit, ends[-1] if len(ends) else 0, limit), side="left") + 1)
    bounds = [0, *cuts[cuts < len(texts)].tolist(), len(texts)]
    return [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]


def shingle_hashes(folded: Sequence[bytes], size: int) -> ShingleHashes:
    """Hashes of the ``size``-word shingles of each text (given by ``fold`` or ``normalized_utf8``); texts of fewer
    than ``size`` words get none. Give it a slice (``slices``) at a time: its temporaries are 20x its bytes."""
    data = np.frombuffer(_SEPARATOR + _SEPARATOR.join(folded) + _SEPARATOR, dtype=np.uint8)
    in_word = _word_bytes(data)
    edges = np.flatnonzero(in_word[1:] != in_word[:-1]) + 1  # a word's start, then its end: both ends are separators
    word_start, word_end = edges[0::2], edges[1::2]
    separators = np.cumsum(np.fromiter(map(len, folded), dtype=np.int64, count=len(folded)) + 1)
    first_word = np.searchsorted(word_start, np.concatenate(([0], separators)))  # per text, and one past the last
    words = np.diff(first_word)

    powers, inverse_powers = _powers(len(data) + 1)
    terms = np.multiply(data, powers[: len(data)], dtype=np.uint64)
    terms += powers[: len(data)]  # (byte + 1) * power: a NUL byte still counts
    prefix = np.zeros(len(data) + 1, dtype=np.uint64)
    np.cumsum(terms, out=prefix[1:])
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
