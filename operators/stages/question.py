"""The question stage: the user side's next question, written by the text writer and judged on the question
rubric (InterSyn: at most 50 words, asks naturally for a picture)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import ClassVar

from seir.operators.base import register
from seir.operators.scoring.rubrics import QUESTION, TurnView
from seir.operators.stages.base import Draft, Stage, TurnContext, Writer
from seir.operators.stages.prompts import question_messages
from seir.operators.stages.replies import revision, take_text


@register
class QuestionStage(Stage):
    name: ClassVar[str] = "question"
    roles: ClassVar[dict[str, tuple[str, ...]]] = {"llm": ("chat",)}
    dimensions: ClassVar[tuple[str, ...]] = (QUESTION.name,)
    writes: ClassVar[tuple[str, ...]] = ("question",)
    purposes: ClassVar[tuple[str, ...]] = ("question",)
    pair_prompt: ClassVar[str | None] = "question"

    def __init__(self, question_words: int) -> None:
        self.question_words = question_words

    async def write(self, turns: Sequence[TurnContext], drafts: list[Draft], previous: Sequence[Draft | None],
                    writer: Writer) -> None:
        prompts = [turn.prompt(partial(question_messages, turn.opening, max_words=self.question_words,
                                       revision=revision(p), images=turn.shown))
                   for turn, p in zip(turns, previous, strict=True)]
        replies = await writer.chat("question", turns, drafts, previous, prompts)
        for draft, reply in zip(drafts, replies, strict=True):
            take_text(draft, reply, "question")

    def view(self, turn: TurnContext, draft: Draft) -> TurnView:
        return turn.view(draft.text or "")
