"""Exact duplicates: equal content keys (xxh3_128), of normalised text or of image bytes.

Text keys equal ``seir.engine.keys.text_key``: NFKC, case folded, whitespace collapsed, then hashed. They work per
turn and per dialogue alike (pass turn texts or dialogue texts). A dialogue's image key is the key of its set of
image keys, so two dialogues match when they hold the same images, in any order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import xxhash

from seir.operators.base import register
from seir.operators.dedup.common import DedupMethod
from seir.operators.dedup.shingles import normalized_utf8


def normalized_key(normalized: bytes) -> str | None:
    """Key of a text already normalised (``shingles.normalized_utf8``); None for the empty text, which is nobody's
    duplicate."""
    return xxhash.xxh3_128_hexdigest(normalized) if normalized else None


@register
@dataclass(frozen=True)
class ExactText(DedupMethod):
    name: ClassVar[str] = "exact-text"
    reads: ClassVar[tuple[str, ...]] = ("dialogue.text",)

    def keys(self, texts: Sequence[str | bytes]) -> list[str | None]:
        """Keys of texts; bytes are taken as normalised already (``shingles.normalized_utf8``, as the engine has
        them)."""
        return [normalized_key(text if isinstance(text, bytes) else normalized_utf8(text)) for text in texts]


@register
@dataclass(frozen=True)
class ExactImage(DedupMethod):
    name: ClassVar[str] = "exact-image"
    reads: ClassVar[tuple[str, ...]] = ("turn.image",)

    def keys(self, images: Sequence[bytes]) -> list[str]:
        return [xxhash.xxh3_128_hexdigest(image) for image in images]

    def set_key(self, image_keys: Sequence[str]) -> str | None:
        """Key of a dialogue's images as a set; None when it has none."""
        return xxhash.xxh3_128_hexdigest(",".join(sorted(set(image_keys))).encode()) if image_keys else None
