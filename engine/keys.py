"""Content keys: xxh3_128 over canonical JSON of everything that determines an output.

A key is what makes resume cheap and refresh incremental: a unit of work whose key was already answered is read
back, not recomputed. Keys are 32 lowercase hex characters.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import unicodedata
from pathlib import PurePath
from typing import Any

import xxhash

from seir.operators.base import LATER_FIELD

_WHITESPACE = re.compile(r"\s+")
BYTES_REFERENCE = "__bytes_xxh3_128__"  # how canonical JSON names bytes (an image): by their content key


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                if not (f.metadata.get(LATER_FIELD) and getattr(value, f.name) == f.default)}
    if hasattr(value, "model_dump"):  # pydantic models
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, bytes):
        return {BYTES_REFERENCE: bytes_key(value)}
    raise TypeError(f"cannot build a content key from {type(value).__name__}: {value!r}")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8; NaN and infinity are refused so the text is stable."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_to_plain, allow_nan=False
    ).encode("utf-8")


def content_key(value: Any) -> str:
    """The xxh3_128 hex digest of the canonical JSON of ``value``."""
    return xxhash.xxh3_128_hexdigest(canonical_json(value))


def bytes_key(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def normalize_text(text: str) -> str:
    """NFKC, case folded, whitespace collapsed: two texts a reader would call the same normalise the same."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


_PUNCTUATION = re.compile(r"[^\w\s]+")


def normalize_words(text: str) -> str:
    """``normalize_text`` with punctuation turned into spaces: for comparing short texts (seeds) by their words,
    where "snow-leopard," and "snow leopard" are the same two words."""
    return normalize_text(_PUNCTUATION.sub(" ", text))


def text_key(text: str) -> str:
    return bytes_key(normalize_text(text).encode("utf-8"))


def file_key(path: PurePath, chunk_bytes: int = 1 << 20) -> str:
    """``bytes_key`` of a file's bytes, read in chunks so a large file is never held whole."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
