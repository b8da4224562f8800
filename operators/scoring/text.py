"""Cheap text checks around the judge: relevance, repetition, length limits and caption-answer redundancy.

0-5 values (``measures.ramp``: linear between two anchors, flat beyond):

- relevance: cosine of the question's and the answer's embeddings (MiniLM), 0 at 0.05, 5 at 0.45.
- repetition: share of repeated word 3-grams in the answer, 5 at 0.05, 0 at 0.4.
- length: 5 within the job's limit (question 50 words, caption 65, answer unlimited by default), 0 at twice it.
- redundancy: the caption should complement the answer, not repeat it. ``measures.redundancy`` (0-1) is the
  larger of the share of the caption's content words found in the answer and the caption-answer embedding
  cosine, each on a ramp; the score is 5 x (1 - redundancy).

text_content = relevance x repetition/5 x answer length/5, question = question length, and (when there is a
caption) image_text_synergy = redundancy score x caption length/5: each defect scales the value down. Empty or
non-English text scores 0 with a reason; enormous text is truncated with a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from seir.operators.base import register
from seir.operators.limits import WordLimits
from seir.operators.scoring import measures as m
from seir.operators.scoring.base import Scorer, ScorerResult
from seir.operators.scoring.guards import MAX_TEXT_CHARS, guard_text, language_problem
from seir.operators.scoring.rubrics import TurnView

Embed = Callable[[list[str]], list[list[float]]]


@register
class TextScorer(Scorer):
    name: ClassVar[str] = "text"
    roles: ClassVar[dict[str, tuple[str, ...]]] = {"embed": ("embed",)}
    reads: ClassVar[tuple[str, ...]] = ("question", "answer", "caption")
    informs: ClassVar[tuple[str, ...]] = ("text_content", "question", "image_text_synergy")

    def __init__(self, embed: Embed, question_words: int = WordLimits.question, caption_words: int = WordLimits.caption,
                 answer_words: int | None = None, max_chars: int = MAX_TEXT_CHARS, english: bool = True) -> None:
        self.embed = embed
        self.limits = {"question": question_words, "caption": caption_words, "answer": answer_words}
        self.max_chars = max_chars
        self.english = english

    def config(self) -> dict[str, Any]:
        return {"operator": self.name, "limits": self.limits, "max_chars": self.max_chars, "english": self.english}

    def score_turns(self, views: Sequence[TurnView]) -> list[ScorerResult]:
        results, texts = [], []
        for view in views:
            result = ScorerResult(self.name)
            fields = {f: self._checked(getattr(view, f), f, result) for f in ("question", "answer", "caption")}
            results.append((result, fields))
            texts += [t for t in (fields["question"], fields["answer"], fields["caption"]) if t]
        vectors = iter(self.embed(texts) if texts else [])  # one batched call for the whole batch, in order
        for result, fields in results:
            embedded = {f: next(vectors) for f in ("question", "answer", "caption") if fields[f]}
            self._fill(result, fields, embedded)
        return [result for result, _ in results]

    def _checked(self, text: str | None, field: str, result: ScorerResult) -> str:
        """The text to score, or "" when it cannot be (the dimensions it feeds then score 0)."""
        given = text is not None
        text, reasons = guard_text(text, field, self.max_chars)
        problem = language_problem(text, field) if self.english and text.strip() else None
        if given and not text.strip():
            reasons.append(f"{field} is empty")
        result.reasons += reasons + ([problem] if problem else [])
        return "" if problem or not text.strip() else text

    def _length(self, field: str, text: str, raw: dict[str, float]) -> float:
        raw[f"{field}_words"] = n = float(len(m.words(text)))
        limit = self.limits[field]
        return 5.0 if limit is None else m.length_score(int(n), limit)

    def _fill(self, result: ScorerResult, fields: dict[str, str], vectors: dict[str, list[float]]) -> None:
        raw, scores = result.raw, result.scores
        question, answer, caption = fields["question"], fields["answer"], fields["caption"]
        scores["question"] = self._length("question", question, raw) if question else 0.0
        if not (question and answer):
            scores["text_content"] = 0.0  # SynJudge: a missing text scores 0
        else:
            raw["relevance_cosine"] = m.cosine(vectors["question"], vectors["answer"])
            raw["answer_repetition"] = m.repeated_ngram_share(m.words(answer))
            relevance = m.ramp(raw["relevance_cosine"], 0.05, 0.45)
            repetition = m.ramp(raw["answer_repetition"], 0.4, 0.05)
            scores["text_content"] = relevance * repetition / 5 * self._length("answer", answer, raw) / 5
        if caption and answer:
            raw["caption_answer_overlap"] = m.containment(m.content_words(caption), m.content_words(answer))
            raw["caption_answer_cosine"] = m.cosine(vectors["caption"], vectors["answer"])
            raw["redundancy"] = m.redundancy(raw["caption_answer_overlap"], raw["caption_answer_cosine"])
            scores["image_text_synergy"] = 5 * (1 - raw["redundancy"]) * self._length("caption", caption, raw) / 5
