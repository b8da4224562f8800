"""A scorer and a dedup method from outside seir, named in jobs as 'module:Class': they must work like built-ins."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import xxhash

from seir.operators.dedup import Sketches, SketchMethod, Skip
from seir.operators.scoring.base import Scorer, ScorerResult
from seir.operators.scoring.rubrics import TurnView


class AnswerEmbedding(Scorer):
    """text_content from the embed role: 5 x the first value of the answer's embedding (clipped to 0-5)."""

    name: ClassVar[str] = "test-answer-embedding"
    roles: ClassVar[dict[str, tuple[str, ...]]] = {"embed": ("embed",)}
    reads: ClassVar[tuple[str, ...]] = ("answer",)
    informs: ClassVar[tuple[str, ...]] = ("text_content",)

    def __init__(self, embed: Callable[[list[str]], list[list[float]]], question_words: int = 0) -> None:
        self.embed, self.question_words = embed, question_words

    def score_turns(self, views: Sequence[TurnView]) -> list[ScorerResult]:
        vectors = self.embed([view.answer or "" for view in views])
        return [ScorerResult(self.name, {"text_content": min(5.0, max(0.0, 5 * vector[0]))},
                             {"question_words": float(self.question_words)}) for vector in vectors]


@dataclass(frozen=True)
class FirstWords(SketchMethod):
    """Dialogues whose first ``words`` words are the same."""

    name: ClassVar[str] = "test-first-words"
    reads: ClassVar[tuple[str, ...]] = ("dialogue.text",)
    sketch_dtype: ClassVar[type] = np.uint64

    words: int = 3

    @property
    def min_similarity(self) -> float:
        return 1.0

    def config(self) -> dict[str, Any]:
        return {"operator": self.name, "words": self.words}

    def sketch(self, inputs: Sequence[bytes]) -> Sketches:
        rows, index, skips = [], [], []
        for i, text in enumerate(inputs):
            first = text.split(b" ")[:self.words]
            if len(first) < self.words:
                skips.append(Skip(i, f"fewer than {self.words} words"))
            else:
                rows.append(xxhash.xxh3_64_intdigest(b" ".join(first)))
                index.append(i)
        return Sketches(np.array(rows, dtype=np.uint64).reshape(-1, 1), np.array(index, dtype=np.int64), tuple(skips))

    def band_keys(self, rows: np.ndarray) -> np.ndarray:
        return rows  # one band: the hash itself

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a[:, 0] == b[:, 0]).astype(np.float64)
