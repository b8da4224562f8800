"""Synthetic corpora with planted duplicates, to measure the dedup methods (``bench_dedup.py`` and the tests).

Texts are dialogues of Zipf-distributed made-up words in sentences and turns, so unrelated texts share common
words and some shingles, as real ones do. Planted copies are exact (up to case and spacing), word-edited at a given
rate, or sentence-reordered. Images are gradients, low-frequency noise textures and shapes; planted copies are
resized, re-encoded as JPEG or lightly cropped. Ground truth for text is the true Jaccard similarity of the shingle
sets (``jaccard``), computed exactly with Python sets.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from seir.operators.dedup.shingles import normalize

if TYPE_CHECKING:
    from PIL import Image

_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def vocabulary(size: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choices(_SYLLABLES, k=rng.choice((1, 2, 2, 3, 3, 4))))] = None
    return list(words)


@dataclass(frozen=True)
class TextCorpus:
    """``source[i]`` is the index of the text that text ``i`` was copied from (-1 for originals); ``kind[i]`` says
    how: "original", "exact", "reorder", "edit 0.05" (5% of words replaced) or "edit 0.01-0.2" (a rate drawn
    uniformly from that range)."""

    texts: list[str]
    source: list[int]
    kind: list[str]


class TextMaker:
    def __init__(self, seed: int = 0, vocabulary_size: int = 5000, zipf: float = 1.1) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary(vocabulary_size, seed)
        weights = 1.0 / np.arange(1, vocabulary_size + 1) ** zipf
        self.cumulative = list(np.cumsum(weights / weights.sum()))

    def dialogue(self, words: int) -> str:
        tokens = self.rng.choices(self.words, cum_weights=self.cumulative, k=words)
        sentences, at = [], 0
        while at < len(tokens):
            length = self.rng.randint(8, 20)
            sentences.append(" ".join(tokens[at:at + length]).capitalize() + ".")
            at += length
        turns = [" ".join(sentences[i:i + 3]) for i in range(0, len(sentences), 3)]
        return "\n".join(f"{'User' if i % 2 == 0 else 'Assistant'}: {turn}" for i, turn in enumerate(turns))

    def edit(self, text: str, fraction: float) -> str:
        """Replace ``fraction`` of the words (at least one) with random vocabulary words; line breaks stay."""
        lines = [line.split(" ") for line in text.split("\n")]
        places = [(i, j) for i, line in enumerate(lines) for j in range(len(line))]
        for i, j in self.rng.sample(places, max(1, round(fraction * len(places)))):
            lines[i][j] = self.rng.choice(self.words)
        return "\n".join(" ".join(line) for line in lines)

    def reorder(self, text: str) -> str:
        sentences = [s.strip() for s in text.replace("\n", " ").split(".") if s.strip()]
        self.rng.shuffle(sentences)
        return ". ".join(sentences) + "."

    def restyle(self, text: str) -> str:
        """The same text to a normaliser: other case and spacing."""
        return "  " + text.upper().replace(" ", "\t ", 3) + "\n"

    def corpus(self, originals: int, copies: dict[str, int], words: int = 200) -> TextCorpus:
        """``originals`` unrelated texts, then for each kind ("exact", "reorder", "edit <fraction>") that many
        copies of randomly chosen originals."""
        texts = [self.dialogue(words) for _ in range(originals)]
        source, kind = [-1] * originals, ["original"] * originals
        for how, count in copies.items():
            for _ in range(count):
                origin = self.rng.randrange(originals)
                if how == "exact":
                    texts.append(self.restyle(texts[origin]))
                elif how == "reorder":
                    texts.append(self.reorder(texts[origin]))
                else:
                    low, _, high = how.split()[1].partition("-")
                    texts.append(self.edit(texts[origin], self.rng.uniform(float(low), float(high or low))))
                source.append(origin)
                kind.append(how)
        return TextCorpus(texts, source, kind)


def shingle_set(text: str, size: int = 3) -> set[str]:
    words = normalize(text).split(" ")
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def image(seed: int, size: int = 96) -> bytes:
    """A PNG unlike any other seed's: a coloured gradient, a low-frequency noise texture and a few shapes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (x * np.cos(angle) + y * np.sin(angle))[..., None]
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    texture = Image.fromarray(rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)).resize((size, size),
                                                                                     Image.Resampling.BICUBIC)
    pixels = 0.6 * (start + (end - start) * ramp) + 0.4 * np.asarray(texture, dtype=np.float64)
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(3):
        x0, y0 = rng.uniform(0, 0.7 * size, 2)
        box = (x0, y0, x0 + rng.uniform(0.15, 0.3) * size, y0 + rng.uniform(0.15, 0.3) * size)
        fill = tuple(int(c) for c in rng.uniform(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return encode(picture, "PNG")


def encode(picture: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **options)
    return buffer.getvalue()


def variant(data: bytes, how: str, rng: random.Random) -> bytes:
    """A near-identical copy: "resize" (to 50-200%), "jpeg" (quality 30-70) or "crop" (1-2% off each side)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        picture = opened.convert("RGB")
    width, height = picture.size
    if how == "resize":
        scale = rng.choice((0.5, 0.75, 1.5, 2.0))
        return encode(picture.resize((round(width * scale), round(height * scale))), "PNG")
    if how == "jpeg":
        return encode(picture, "JPEG", quality=rng.randint(30, 70))
    if how == "crop":
        left, top, right, bottom = (rng.uniform(0.01, 0.02) for _ in range(4))
        box = (round(left * width), round(top * height), round((1 - right) * width), round((1 - bottom) * height))
        return encode(picture.crop(box), "PNG")
    raise ValueError(f"unknown image variant {how!r}")


def unit_vectors(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((count, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def near_vector(base: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly ``cosine`` to the unit vector ``base``."""
    other = rng.standard_normal(base.shape)
    other -= (other @ base) * base
    return cosine * base + np.sqrt(1.0 - cosine**2) * other / np.linalg.norm(other)
