"""Perceptual image hash: near-identical images (resized, re-encoded, lightly cropped) within a Hamming distance.

The image is reduced to a 32x32 greyscale, transformed with a 2-D DCT-II, and the top-left 8x8 (lowest
frequencies: the coarse layout, which survives resizing and compression) is thresholded at its median into 64
bits. Candidate pairs come from the pigeonhole principle: with the bits cut into ``max_distance + 1`` bands, two
hashes within ``max_distance`` differing bits agree exactly on at least one band, so banding loses no pair.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from seir.operators.base import register
from seir.operators.dedup.common import Sketches, SketchMethod, sketch_each

_SIDE, _LOW = 32, 8
_ADDRESS = re.compile(r" <[^>]* at 0x[0-9a-f]+>")  # PIL names the BytesIO object: noise in a stored reason
_BITS = _LOW * _LOW


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II: ``C @ x`` transforms a length-n signal (``C @ X @ C.T`` a square image)."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_LOW_DCT = _dct_matrix(_SIDE)[:_LOW]


def _pixels(data: bytes) -> np.ndarray | str:
    """The image as 32x32 greyscale, or why it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            small = image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS)
    except Exception as error:  # PIL raises many types on bad bytes; any of them means "not judged"
        return f"undecodable image: {type(error).__name__}: {_ADDRESS.sub('', str(error))}"
    return np.asarray(small, dtype=np.float64).ravel()


@register
@dataclass(frozen=True)
class PerceptualHash(SketchMethod):
    """Near-duplicate images: 64-bit DCT hashes at Hamming distance <= ``max_distance``."""

    name: ClassVar[str] = "image-phash"
    reads: ClassVar[tuple[str, ...]] = ("turn.image",)
    sketch_dtype: ClassVar[type] = np.uint64

    max_distance: int = 6

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance < _BITS // 2:
            raise ValueError(f"image-phash max_distance must be in [0, {_BITS // 2}), got {self.max_distance}")

    @property
    def min_similarity(self) -> float:
        return 1.0 - self.max_distance / _BITS

    def config(self) -> dict[str, Any]:
        return {"operator": self.name, **dataclasses.asdict(self)}

    def sketch(self, images: Sequence[bytes]) -> Sketches:
        """One uint64 hash per decodable image, as an ``(n, 1)`` array."""
        pixels = sketch_each(images, _SIDE * _SIDE, np.float64, _pixels)
        low = _LOW_DCT @ pixels.rows.reshape(-1, _SIDE, _SIDE) @ _LOW_DCT.T
        flat = low.reshape(len(pixels.index), _BITS)
        bits = flat > np.median(flat, axis=1, keepdims=True)
        hashes = np.packbits(bits, axis=1).view(">u8").astype(np.uint64)
        return dataclasses.replace(pixels, rows=hashes)

    @cached_property
    def _band_edges(self) -> np.ndarray:
        return np.linspace(0, _BITS, self.max_distance + 2).round().astype(np.uint64)

    def band_keys(self, rows: np.ndarray) -> np.ndarray:
        low, high = self._band_edges[:-1], self._band_edges[1:]
        masks = (np.uint64(1) << (high - low)) - np.uint64(1)  # widths < 64: at least 2 bands
        return (rows >> low) & masks

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """1 - Hamming distance / 64."""
        return 1.0 - np.bitwise_count(a[:, 0] ^ b[:, 0]) / _BITS
