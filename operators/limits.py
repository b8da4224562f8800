"""How long the writer's texts may be: the one home of the word limits, read by the job spec (its defaults), the
writers' prompts, the judge's rubrics and the text scorer alike."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WordLimits:
    question: int = 50  # InterSyn's question limit
    caption: int = 65  # InterSyn's caption limit, also asked of the critic's suggested caption


INTERSYN_LIMITS = WordLimits()  # the limits a job gets unless it sets question_words or caption_words
