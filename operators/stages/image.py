"""The image stage: the image role renders the kept answer's caption; the judge sees the picture with its caption
(and, for an edit, the user's picture it started from) and may suggest a better caption; the next round renders the
suggested caption, or the text writer rewrites the caption from the critique. Every picture, the last one too, is
judged.

In a turn where the user shows pictures the render is an edit (``seir.edit``): it starts from the picture the kept
caption's last line named (the turn's first when it named none), and every round starts from that same picture so
rounds do not drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from seir.operators.backends.base import CallFailure, RenderRequest
from seir.operators.base import register
from seir.operators.scoring.rubrics import TurnView, suggested_caption
from seir.operators.stages.answer import caption_prompt
from seir.operators.stages.base import Draft, Stage, TurnContext, Writer
from seir.operators.stages.prompts import NEW_PICTURE
from seir.operators.stages.replies import revision, take_caption


@register
class ImageStage(Stage):
    name: ClassVar[str] = "image"
    writer: ClassVar[str] = "image"
    roles: ClassVar[dict[str, tuple[str, ...]]] = {"image": ("render",), "llm": ("chat",)}
    dimensions: ClassVar[tuple[str, ...]] = ("image_content", "image_quality", "image_text_synergy")
    writes: ClassVar[tuple[str, ...]] = ("caption", "image")
    purposes: ClassVar[tuple[str, ...]] = ("caption", "render")
    read_later: ClassVar[bool] = False  # a turn's picture does not enter the next turn's requests

    def __init__(self, caption_words: int, image_width: int, image_height: int, image_steps: int,
                 guidance_scale: float | None, edit: Literal["auto", "always", "never"], edit_strength: float) -> None:
        self.caption_words = caption_words
        self.image_width, self.image_height, self.image_steps = image_width, image_height, image_steps
        self.guidance_scale, self.edit, self.edit_strength = guidance_scale, edit, edit_strength

    async def write(self, turns: Sequence[TurnContext], drafts: list[Draft], previous: Sequence[Draft | None],
                    writer: Writer) -> None:
        captions: list[str | None] = []
        rewrite = []
        for i, (turn, p) in enumerate(zip(turns, previous, strict=True)):
            if p is None:
                captions.append(turn.kept["answer"].caption)
            elif p.ok and (proposed := suggested_caption(p.critique)):
                captions.append(proposed)
            else:
                captions.append(None)
                rewrite.append(i)
        if rewrite:
            replies = await writer.chat(
                "caption", [turns[i] for i in rewrite], [drafts[i] for i in rewrite], [previous[i] for i in rewrite],
                [caption_prompt(turns[i], turns[i].kept_text("answer"), self.caption_words, revision(previous[i]))
                 for i in rewrite])
            for i, reply in zip(rewrite, replies, strict=True):
                # A rewrite keeps the turn's source: a picture named again here would let rounds drift.
                take_caption(drafts[i], reply, len(turns[i].shown))
                if drafts[i].ok:
                    captions[i] = drafts[i].text
        rendering = [i for i, caption in enumerate(captions) if caption]
        for i in rendering:
            drafts[i].source_key = self._edit_source(turns[i])
        requests = [
            RenderRequest(prompt=captions[i] or "", seed=writer.sampling_seed(turns[i], drafts[i], "render"),
                          width=self.image_width, height=self.image_height, steps=self.image_steps,
                          guidance_scale=self.guidance_scale, source=turns[i].picture(drafts[i].source_key),
                          strength=self.edit_strength if drafts[i].source_key else None)
            for i in rendering
        ]
        images = await writer.render([drafts[i] for i in rendering], requests)
        for i, image in zip(rendering, images, strict=True):
            draft = drafts[i]
            draft.text = captions[i]
            if isinstance(image, CallFailure):
                draft.ok, draft.reason = False, image.reason
            else:
                draft.image_key = image.key
                turns[i].images[image.key] = image.png
        for draft in drafts:
            draft.caption = draft.text

    def _edit_source(self, turn: TurnContext) -> str | None:
        """The key of the picture this turn's render starts from (``seir.edit``), None to render from the caption:
        the picture the kept answer's caption named among those the user shows with the question, the first of them
        when it named none (or, under "always", when it asked for a new picture)."""
        if self.edit == "never" or not turn.shown_keys:
            return None
        chosen = turn.kept["answer"].start_from
        if chosen == NEW_PICTURE and self.edit == "auto":
            return None
        return turn.shown_keys[(chosen or 1) - 1]

    def view(self, turn: TurnContext, draft: Draft) -> TurnView:
        return turn.view(turn.kept_text("question"), turn.kept_text("answer"), draft.text,
                         turn.images.get(draft.image_key or ""), turn.picture(draft.source_key))
