"""The answer stage: the assistant's answer, then (in a second call, so no answer is lost to a model that ignores an
output format) the caption of the picture that should go with it. Judged on text content."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import ClassVar

from seir.operators.base import register
from seir.operators.scoring.rubrics import TurnView
from seir.operators.stages.base import Draft, Prompt, Stage, TurnContext, Writer
from seir.operators.stages.prompts import History, Revision, answer_messages, caption_messages
from seir.operators.stages.replies import revision, take_caption, take_text


def caption_prompt(turn: TurnContext, answer: str, words: int, revised: Revision | None) -> Prompt:
    """A caption request. It shows every picture the user has brought so far: those of earlier turns are history
    (left out first, oldest first, when the window needs it), those of this turn are not."""
    def build(history: History) -> list[dict]:
        return caption_messages(turn.kept_text("question"), answer, words, revised,
                                [*history.pictures(), *turn.shown], turn.shown)

    return turn.prompt(build)


@register
class AnswerStage(Stage):
    name: ClassVar[str] = "answer"
    roles: ClassVar[dict[str, tuple[str, ...]]] = {"llm": ("chat",)}
    dimensions: ClassVar[tuple[str, ...]] = ("text_content",)
    writes: ClassVar[tuple[str, ...]] = ("answer", "caption")
    purposes: ClassVar[tuple[str, ...]] = ("answer", "caption")
    pair_prompt: ClassVar[str | None] = "answer"

    def __init__(self, caption_words: int) -> None:
        self.caption_words = caption_words

    async def write(self, turns: Sequence[TurnContext], drafts: list[Draft], previous: Sequence[Draft | None],
                    writer: Writer) -> None:
        prompts = [turn.prompt(partial(answer_messages, turn.kept_text("question"), revision=revision(p),
                                       images=turn.shown, briefs=turn.briefs))
                   for turn, p in zip(turns, previous, strict=True)]
        replies = await writer.chat("answer", turns, drafts, previous, prompts)
        for draft, reply in zip(drafts, replies, strict=True):
            take_text(draft, reply, "answer")
        writing = [(t, d, p) for t, d, p in zip(turns, drafts, previous, strict=True) if d.ok]
        captions = await writer.chat(
            "caption", [t for t, _, _ in writing], [d for _, d, _ in writing], [p for _, _, p in writing],
            [caption_prompt(t, d.text or "", self.caption_words, revision(p, p.caption if p else None))
             for t, d, p in writing])
        for (turn, draft, _), reply in zip(writing, captions, strict=True):
            draft.start_from = take_caption(draft, reply, len(turn.shown), into="caption")

    def view(self, turn: TurnContext, draft: Draft) -> TurnView:
        return turn.view(turn.kept_text("question"), draft.text, draft.caption)
