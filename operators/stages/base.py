"""What a stage of the SEIR loop is: one declared unit, and the records and context it works on.

A stage declares, in one place, the role that writes it (with the capabilities it uses), how it builds the writer's
requests from a turn's context (``write``), what the judge and scorers see of one of its drafts (``view``), the
dimensions it is judged on, the fields its drafts write, the job settings its output reads (its constructor's
parameters) and which recorded request is the prompt of its preference pairs. The engine iterates over a job's
stages (``seir.stages``) and never names one: the loop, rescore, the refresh forecast, lineage, the window report,
the job check, provenance and exports all read these declarations.

Stages are plain Python, like every operator: a stage asks for model calls through the ``Writer`` the engine hands
it, which batches, fits, seeds, caches and records them.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from seir.operators.backends.base import CallFailure, RenderRequest
from seir.operators.base import Operator
from seir.operators.context import Trim, Window
from seir.operators.scoring.rubrics import TurnView
from seir.operators.stages.prompts import History

# -- the role contract: each role's part in the loop, stated here once ----------------------------------------------
TEXT_WRITER = "llm"  # writes every text stage
VISION_WRITER = "vlm"  # optional: stands in for the text writer on dialogues whose seeds bring pictures
JUDGE = "judge"  # critiques every draft (the judge scorer, pairwise comparisons)
JUDGE_NEEDS: tuple[str, ...] = ("chat",)


# -- records ------------------------------------------------------------------------------------------------------
# Metadata of a record field that is never a column of the record's table (held elsewhere, or only while the loop
# runs): the store derives a record's columns from its other fields.
NOT_STORED = "seir_not_stored"
IN_MEMORY = {NOT_STORED: True}


def stored_fields(record: type) -> tuple[dataclasses.Field, ...]:
    """The fields of ``record`` that are columns of its table, in declaration order."""
    return tuple(f for f in dataclasses.fields(record) if not f.metadata.get(NOT_STORED))


@dataclass
class Score:
    dimension: str
    value: float  # combined 0-5 (or the rubric's own scale)
    scorer: str  # "combined" or a scorer's name
    model_id: str | None
    raw: dict[str, Any] = field(default_factory=dict)
    method: str | None = None  # how a judge's score was read (openai_chat.SCORE_METHODS); None for other scorers


@dataclass
class Draft:
    """One attempt at one stage of one turn: a row of the ``drafts`` table (its scores are rows of ``scores``)."""

    draft_key: str
    dialogue_key: str
    turn_index: int
    stage: str  # the stage's name
    round: int
    text: str | None  # the stage's text: question, answer, the caption rendered (image stage), or a plugin's
    caption: str | None = None  # answer stage: the caption proposed with the answer
    image_key: str | None = None
    ok: bool = True
    reason: str = ""  # why a draft failed, or why it was chosen or refined
    critique: str = ""
    scores: list[Score] = field(default_factory=list, metadata=IN_MEMORY)  # rows of ``scores``
    passed: bool = False
    best: bool = False  # kept as the stage's result
    call_keys: list[str] = field(default_factory=list)
    candidate: int = 0  # which of the round's best-of-N samples (seir.candidates)
    round_best: bool = False  # the round's choice among its candidates: what the next round refines
    # Answer stage: the picture the caption named to start from (1-based among those the user shows with the
    # question; prompts.NEW_PICTURE for none; None when it named none). The render records the choice.
    start_from: int | None = field(default=None, metadata=IN_MEMORY)
    source_key: str | None = None  # image stage: the user's picture the render started from (an edit)

    def combined(self) -> dict[str, float]:
        return {s.dimension: s.value for s in self.scores if s.scorer == "combined"}

    def mean_score(self) -> float:
        """What ranks drafts of one stage: the mean combined score over the stage's dimensions."""
        values = list(self.combined().values())
        return sum(values) / len(values) if values else float("-inf")


# -- context: the one builder of what a call sees of a turn ---------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    """A writer's request before it is fitted: how to build it with some earlier turns left out, and those turns."""

    build: Callable[[Trim], list[dict]]
    earlier: list[tuple[str, str, tuple[bytes, ...]]]

    @classmethod
    def over(cls, history: History, write: Callable[[History], list[dict]]) -> Prompt:
        return cls(lambda trim: write(history.fitted(trim)), history.earlier())

    def fitted(self, window: Window | None, reply: int, what: str) -> list[dict]:
        """The request as sent: fitted to ``window`` (older history left out first), or whole without one."""
        if window is None:
            return self.build(Trim())
        return window.fit(self.build, self.earlier, reply, what).messages


@dataclass
class TurnContext:
    """Everything a stage's writer and its judge may see of one turn of one dialogue: the seed's request, the
    earlier turns with the pictures the user brought in them, the pictures the user shows now, and the drafts this
    turn's earlier stages kept. The live loop, rescore and the window report build their requests and views from
    this one type."""

    opening: str  # the seed's request
    seed_key: str  # the seed's content key: what every sampling seed of the dialogue starts from
    history: History  # earlier turns (question, answer) and the pictures the user brought in each
    shown: tuple[bytes, ...] = ()  # the pictures the user brings with this turn's question
    shown_keys: tuple[str, ...] = ()  # their image keys, in the same order
    kept: dict[str, Draft] = field(default_factory=dict)  # this turn's kept draft of each earlier stage, by name
    images: dict[str, bytes] = field(default_factory=dict)  # pictures made this turn, by key (for the judge)
    briefs: list[str] = field(default_factory=list)  # what this turn's earlier stages tell later ones (Stage.brief)
    has_pictures: bool = False  # the seed brings pictures (somewhere in the dialogue): the vision writer writes it

    @classmethod
    def at(cls, turn_index: int, earlier: Sequence[tuple[str, str]], pictures: Sequence[Sequence[bytes]],
           picture_keys: Sequence[Sequence[str]], opening: str = "", seed_key: str = "",
           kept: dict[str, Draft] | None = None, images: dict[str, bytes] | None = None) -> TurnContext:
        """The context of turn ``turn_index``: ``earlier`` holds the (question, answer) of the turns before it,
        ``pictures`` and ``picture_keys`` the pictures the user brings in each turn (the seed's, by turn)."""
        def of_turn(items: Sequence[Sequence[Any]]) -> tuple[Any, ...]:
            return tuple(items[turn_index]) if turn_index < len(items) else ()

        history = History(tuple(earlier[:turn_index]), tuple(tuple(p) for p in pictures[:turn_index]))
        return cls(opening, seed_key, history, shown=of_turn(pictures), shown_keys=of_turn(picture_keys),
                   kept=kept or {}, images=images or {}, has_pictures=any(picture_keys))

    def kept_text(self, stage: str) -> str:
        draft = self.kept.get(stage)
        return (draft.text or "") if draft else ""

    def picture(self, key: str | None) -> bytes | None:
        """The bytes of a picture the user shows with this turn's question, by key."""
        return dict(zip(self.shown_keys, self.shown, strict=True)).get(key or "")

    def prompt(self, write: Callable[[History], list[dict]]) -> Prompt:
        """A writer's request over this turn's history, fitted to the writer's window when it is sent."""
        return Prompt.over(self.history, write)

    def view(self, question: str, answer: str | None = None, caption: str | None = None, image: bytes | None = None,
             source: bytes | None = None) -> TurnView:
        """What the judge sees: this turn's question (and what else the stage shows) over the earlier turns."""
        return TurnView(question=question, answer=answer, caption=caption, image=image,
                        history=list(self.history.turns), shown=list(self.shown),
                        history_shown=[list(images) for images in self.history.images[: len(self.history.turns)]],
                        source=source)


# -- what the engine gives a stage to write with ---------------------------------------------------------------------
class Rendered(Protocol):
    key: str
    png: bytes
    call_key: str


class Writer(Protocol):
    """The engine's side of writing: batched, fitted, seeded, cached and recorded calls. Each call adds its key to the
    draft it was made for; a request that failed (or did not fit its window) comes back as a ``CallFailure``."""

    async def chat(self, purpose: str, turns: Sequence[TurnContext], drafts: Sequence[Draft],
                   previous: Sequence[Draft | None], prompts: Sequence[Prompt]) -> list[str | CallFailure]:
        """One chat request per draft, to the stage's writer (the vision writer for dialogues with pictures)."""
        ...

    async def render(self, drafts: Sequence[Draft], requests: Sequence[RenderRequest]) -> list[Rendered | CallFailure]:
        """One picture per draft, from the image role."""
        ...

    def sampling_seed(self, turn: TurnContext, draft: Draft, purpose: str) -> int:
        """The sampling seed of a draft's call for ``purpose`` (fixed by the seed, turn, stage, round, candidate)."""
        ...


class Stage(Operator):
    """Base of a stage of the loop. A subclass sets the declarations below and implements ``write`` and ``view``;
    its constructor's parameters name the ``seir`` job settings its output reads (the engine passes them)."""

    kind: ClassVar[str] = "stage"
    writer: ClassVar[str] = TEXT_WRITER  # the role that writes its drafts
    dimensions: ClassVar[tuple[str, ...]] = ()  # what its drafts are gated and ranked on
    writes: ClassVar[tuple[str, ...]] = ("question",)  # the ``TurnView`` fields its drafts set
    purposes: ClassVar[tuple[str, ...]] = ()  # the writer calls one draft makes, in order (keys, windows)
    # The purpose of the writer call whose recorded request is the prompt of the stage's preference pairs; None: the
    # dialogue up to the turn's question (a stage whose writer is not asked in words, like the image stage's).
    pair_prompt: ClassVar[str | None] = None
    read_later: ClassVar[bool] = True  # later stages and turns read its kept draft (the refresh forecast needs it)

    @classmethod
    def settings(cls) -> tuple[str, ...]:
        """The job settings (``seir.*``) its output reads: its constructor's parameters."""
        return tuple(name for name in inspect.signature(cls).parameters if name not in ("self", "args", "kwargs"))

    async def write(self, turns: Sequence[TurnContext], drafts: list[Draft], previous: Sequence[Draft | None],
                    writer: Writer) -> None:
        """Fill one draft per turn (``drafts[i]`` for ``turns[i]``), refining ``previous[i]`` where there is one."""
        raise NotImplementedError

    def view(self, turn: TurnContext, draft: Draft) -> TurnView:
        """What the judge and the scorers see of ``draft``."""
        raise NotImplementedError

    def brief(self, draft: Draft) -> str:
        """What later stages of the turn are told of this stage's kept draft ("" for nothing): the built-in stages
        place their output themselves; a stage of one's own may hand, say, a plan to the answer's writer."""
        return ""

    def config(self) -> dict[str, Any]:
        return {"operator": self.name, **{name: getattr(self, name, None) for name in self.settings()}}
