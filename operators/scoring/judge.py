"""The judge: a vision-language model critiques a turn, then each dimension's score is read as the expectation over
the score tokens after that critique (``rubrics.score_request``). It only calls the two batch callables it is
given, so a local transformers backend and an OpenAI-compatible server serve it unchanged.

Turn-level dimensions are asked of ``TurnView``s and dialogue-level ones (InterMT's five) of ``DialogueView``s; a
batch may mix both. A dimension whose inputs are missing scores 0 without a model call (SynJudge's rule).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from seir.operators.backends.base import ChatRequest, ChatResult, Sampling, ScoreRequest, ScoreResult
from seir.operators.base import register
from seir.operators.context import DoesNotFit, Trim, Window
from seir.operators.limits import WordLimits
from seir.operators.scoring.base import Scorer, ScorerResult
from seir.operators.scoring.guards import MAX_PIXELS, guarded_view
from seir.operators.scoring.rubrics import (
    DIMENSIONS,
    SYNJUDGE,
    DialogueView,
    Dimension,
    View,
    critique_messages,
    missing_input_score,
    present_inputs,
    prompt_fingerprint,
    score_request,
)

SCORE_LINE_TOKENS = 24  # "Image-text synergy score (0-5): " and the label read after it, with room to spare

Chat = Callable[[list[ChatRequest]], list[ChatResult]]
Score = Callable[[list[ScoreRequest]], list[ScoreResult]]


def dimensions_named(names: Sequence[str]) -> list[Dimension]:
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown dimensions {unknown}; known: {', '.join(DIMENSIONS)}")
    return [DIMENSIONS[n] for n in names]


@register
class JudgeScorer(Scorer):
    name: ClassVar[str] = "judge"
    roles: ClassVar[dict[str, tuple[str, ...]]] = {"judge": ("chat", "score", "vision")}
    reads: ClassVar[tuple[str, ...]] = ("question", "answer", "caption", "image", "history")
    informs: ClassVar[tuple[str, ...]] = tuple(DIMENSIONS)

    def __init__(self, chat: Chat, score: Score, dimensions: Sequence[str] = tuple(SYNJUDGE),
                 sampling: Sampling | None = None, max_chars: int = 8000, max_pixels: int = MAX_PIXELS,
                 min_label_mass: float = 0.5, window: Window | None = None,
                 question_words: int = WordLimits.question, caption_words: int = WordLimits.caption) -> None:
        self.chat, self.score = chat, score
        self.limits = WordLimits(question_words, caption_words)  # what the rubrics hold the writer's texts to
        self.window = window  # the judge's context window: requests are fitted to it
        self.dimensions = dimensions_named(dimensions)
        self.sampling = sampling or Sampling(max_new_tokens=192)
        self.max_chars, self.max_pixels = max_chars, max_pixels
        self.min_label_mass = min_label_mass  # below it the judge was mostly not answering with a score

    def config(self) -> dict[str, Any]:
        return {"operator": self.name, "dimensions": [d.name for d in self.dimensions],
                "sampling": dataclasses.asdict(self.sampling), "max_chars": self.max_chars,
                "max_pixels": self.max_pixels, "prompts": prompt_fingerprint(self.dimensions, self.limits)}

    def score_turns(self, views: Sequence[View], dimensions: Sequence[str] | None = None) -> list[ScorerResult]:
        """Scores on the configured dimensions, or on ``dimensions`` for this call."""
        dims = self.dimensions if dimensions is None else dimensions_named(dimensions)
        results, jobs = [], []
        for original in views:
            view, reasons = guarded_view(original, self.max_chars, self.max_pixels)
            result = ScorerResult(self.name, reasons=reasons)
            applicable = [d for d in dims if d.per_dialogue == isinstance(view, DialogueView)]
            asked = [d for d in applicable if missing_input_score(d, view) is None]
            for d in applicable:
                if d not in asked:
                    result.scores[d.name], result.raw[d.name] = 0.0, float(d.scale[0])
                    missing = ", ".join(sorted(d.needs - present_inputs(view)))
                    result.reasons.append(f"{d.name} scores 0: no {missing}")
            if asked:
                try:
                    jobs.append((self._fitted(view, asked), result, asked))
                except DoesNotFit as err:
                    result.failure = str(err)
            results.append(result)
        if not jobs:
            return results
        critiques = self.chat([ChatRequest(critique_messages(a, v, self.limits), self.sampling) for v, _, a in jobs])
        requests = [self._score_request(d, v, c.text, a) for (v, _, a), c in zip(jobs, critiques, strict=True)
                    for d in a]
        answers = iter(self.score(requests))
        for (_, result, asked), critique in zip(jobs, critiques, strict=True):
            result.critique = critique.text
            result.call_keys.append(critique.call_key)
            for d in asked:
                answer = next(answers)
                result.call_keys.append(answer.call_key)
                result.raw[d.name], result.raw[f"{d.name}.label_mass"] = answer.expectation, answer.label_mass
                result.methods[d.name] = answer.method
                result.scores[d.name] = d.to_0_5(answer.expectation)
                if answer.label_mass < self.min_label_mass:
                    result.reasons.append(f"{d.name}: only {answer.label_mass:.0%} of the judge's next-token "
                                          "probability was on score labels (off-format)")
        return results

    def _score_request(self, dimension: Dimension, view: View, critique: str, asked: list[Dimension]) -> ScoreRequest:
        """The score read after ``critique``. A critique tokenised again can come out longer than it was written, so
        a request over the window leaves out more of the history (the critique itself is never cut)."""
        request = score_request(dimension, view, critique, asked, self.limits)
        if self.window is None or self.window.limit is None:
            return request
        try:
            fitted = self.window.fit(self._critique(asked, view), view.earlier(), 1, "score",
                                     suffix=request.answer_prefix)
        except DoesNotFit:  # nothing left to leave out: the read goes as its critique went
            return request
        return dataclasses.replace(request, messages=fitted.messages)

    def _fitted(self, view: View, asked: list[Dimension]) -> View:
        """The view with as much history left out as the judge's window needs. The room kept is the critique's
        and then a score line's, so each score request (the critique conversation, the critique, a score line)
        fits as well and shares the critique's prompt."""
        if self.window is None:
            return view
        room = self.sampling.max_new_tokens + SCORE_LINE_TOKENS
        subject = "dialogue critique" if isinstance(view, DialogueView) else "critique"
        fitted = self.window.fit(self._critique(asked, view), view.earlier(), room, subject)
        return dataclasses.replace(view, trim=fitted.trim)

    def _critique(self, asked: list[Dimension], view: View) -> Callable[[Trim], list[dict[str, Any]]]:
        """The critique request of ``view`` with a given part of its history left out."""
        return lambda trim: critique_messages(asked, dataclasses.replace(view, trim=trim), self.limits)
