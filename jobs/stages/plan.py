"""A stage of one's own, as a worked example (docs/stages.md): before each answer, the writer drafts the plan the
answer will follow. The plan is judged, refined and gated like any built-in stage, recorded in provenance, exported
as preference pairs, and handed to the answer's writer through ``brief``.

Named in a job as ``seir.stages: [question, "stages.plan:PlanStage", answer, image]``: a module path is imported
from the job file's folder (jobs/demo-stage.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from seir.operators.scoring.rubrics import TurnView
from seir.operators.stages import Draft, Stage, TurnContext, Writer
from seir.operators.stages.prompts import History
from seir.operators.stages.replies import revision, take_text


class PlanStage(Stage):
    name: ClassVar[str] = "plan"
    roles: ClassVar[dict[str, tuple[str, ...]]] = {"llm": ("chat",)}
    dimensions: ClassVar[tuple[str, ...]] = ("text_quality",)  # InterMT's: clear, accurate, well organised
    writes: ClassVar[tuple[str, ...]] = ("answer",)  # the judge reads the plan where an answer would stand
    purposes: ClassVar[tuple[str, ...]] = ("plan",)
    pair_prompt: ClassVar[str | None] = "plan"

    def __init__(self, plan_words: int = 60) -> None:
        self.plan_words = plan_words

    async def write(self, turns: Sequence[TurnContext], drafts: list[Draft], previous: Sequence[Draft | None],
                    writer: Writer) -> None:
        prompts = [turn.prompt(lambda history, turn=turn, p=p: self._messages(turn, history, p))
                   for turn, p in zip(turns, previous, strict=True)]
        replies = await writer.chat("plan", turns, drafts, previous, prompts)
        for draft, reply in zip(drafts, replies, strict=True):
            take_text(draft, reply, "plan")

    def _messages(self, turn: TurnContext, history: History, previous: Draft | None) -> list[dict[str, Any]]:
        task = (f"Question: {turn.kept_text('question')}\nBefore answering, write a numbered plan of at most "
                f"{self.plan_words} words: the points the answer must make, in order, and what its picture should "
                "show. Reply with the plan alone.")
        revised = revision(previous)
        if revised is not None:
            task += (f"\n\nA reviewer read this plan:\n{revised.draft}\nand said:\n{revised.critique}\n"
                     "Write an improved plan that fixes every point.")
        content: Any = task
        if turn.shown:
            content = [*({"type": "image", "image": data} for data in turn.shown), {"type": "text", "text": task}]
        system = {"role": "system", "content": "You plan the answers of a knowledgeable assistant that answers with "
                                               "text and a picture."}
        return [system, *history.as_messages({"role": "user", "content": content})]

    def view(self, turn: TurnContext, draft: Draft) -> TurnView:
        return turn.view(turn.kept_text("question"), draft.text)

    def brief(self, draft: Draft) -> str:
        return f"Follow this plan in your answer:\n{draft.text}"
