"""Typed records that flow from the SEIR loop to the provenance store and the exported dataset, and the dimensions
they are judged on. A stage's drafts and their scores are records of ``seir.operators.stages``, re-exported here.

Every record carries the content key of what produced it; the store adds ``run_id`` when it commits a shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from seir.operators.scoring.rubrics import QUESTION, SYNJUDGE
from seir.operators.stages import Draft, Score, Stage

# -- which dimensions judge what: each rule stated here once, for the loop, the store's SQL and the exports --------
# (which dimensions judge each stage's drafts, and what they write, each stage declares: seir.operators.stages)

# The dimensions a turn's content is scored on (SynJudge's four): what the exported versions list per turn and
# what a dialogue's dedup keep-score averages.
CONTENT_DIMENSIONS: tuple[str, ...] = tuple(SYNJUDGE)
# Every dimension a turn has a final score on, one column each in the ``turn_final_scores`` view.
TURN_DIMENSIONS: tuple[str, ...] = (*CONTENT_DIMENSIONS, QUESTION.name)


@dataclass(frozen=True)
class StageRecord:
    """What an output keeps of each stage a run ran (``runs.stages``), so that exports and lineage read an output's
    stages from the output itself, with no need to import a stage of one's own again."""

    name: str
    writes: tuple[str, ...]  # the turn fields its drafts set
    dimensions: tuple[str, ...]  # what its drafts are judged on
    # Where in a draft's call keys the writer request that is its preference pairs' prompt sits (the stage's
    # ``pair_prompt`` among its ``purposes``); None: the pairs' prompt is the dialogue up to the turn's question.
    prompt_call: int | None

    @classmethod
    def of(cls, stage: Stage | type[Stage]) -> StageRecord:
        prompt_call = None if stage.pair_prompt is None else stage.purposes.index(stage.pair_prompt)
        return cls(stage.name, tuple(stage.writes), tuple(stage.dimensions), prompt_call)

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> StageRecord:
        return cls(stored["name"], tuple(stored["writes"]), tuple(stored["dimensions"]), stored["prompt_call"])

    @property
    def image_pairs(self) -> bool:
        """Its pairs differ in their pictures (it writes images), not only in text."""
        return "image" in self.writes


@dataclass(frozen=True)
class Seed:
    """What a dialogue starts from: an InterSyn topic put into a question template, or a seed file's own text."""

    seed_key: str
    seed_id: str
    source: str  # "intersyn" or "path/to/seeds.jsonl:LINE"
    text: str  # the opening request (template with the topic filled in, or the seed's text)
    topic: str | None = None
    template: str | None = None
    turn_images: tuple[tuple[str, ...], ...] = ()  # image keys the user brings in each turn, the first turn first
    turns: int | None = None  # per-seed override of the job's number of turns

    @property
    def images(self) -> tuple[str, ...]:
        """Every image the seed brings, in the order the turns show them."""
        return tuple(key for keys in self.turn_images for key in keys)

    def images_of_turn(self, index: int) -> tuple[str, ...]:
        return self.turn_images[index] if index < len(self.turn_images) else ()

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Seed:
        """A seed from a table row of ``SEED_COLUMNS``."""
        values = dict(zip(SEED_COLUMNS, row, strict=True))
        values["turn_images"] = tuple(tuple(keys) for keys in values["turn_images"] or ())
        return cls(**values)


@dataclass(frozen=True)
class DialogueTask:
    """One dialogue to make: its seed, the id it keeps across runs, its key and its number of turns."""

    seed: Seed
    dialogue_id: str
    dialogue_key: str
    turns: int


# A seed's columns wherever seeds are tabled (the seeds being planned, the store's seeds table), in Seed's order.
SEED_COLUMNS = ("seed_key", "seed_id", "source", "text", "topic", "template", "turn_images", "turns")


@dataclass
class Quarantined:
    """A bad input line, kept with the reason it was refused."""

    source: str
    line: int
    field: str
    reason: str
    raw: str


@dataclass(frozen=True)
class SeedDuplicate:
    """A seed dropped before any model call because it near-duplicates an earlier seed (kept)."""

    seed: Seed
    kept: Seed
    method: str
    similarity: float


@dataclass
class ModelCall:
    """One request inside one batched call to a model role."""

    call_key: str
    role: str
    method: str  # chat, score, render, embed, similarity
    model_id: str
    revision: str
    request: dict[str, Any]  # the request as sent (images replaced by their keys)
    output: dict[str, Any]  # the result as returned (images replaced by their keys)
    tokens_in: int
    tokens_out: int
    latency_ms: float  # wall time of the whole batched call
    batch_id: str
    batch_size: int
    cached: bool  # answered from an earlier call with the same key
    image_keys: list[str] = field(default_factory=list)  # the images the request showed, in order (by content key)


@dataclass
class StoredImage:
    key: str
    png: bytes
    width: int
    height: int
    call_key: str = ""


@dataclass
class Ledger:
    """What one shard produced besides its dialogues: committed together with them."""

    calls: list[ModelCall] = field(default_factory=list)
    images: dict[str, StoredImage] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """The judge asked which of two candidates of one round is better, in one order: ``first`` shown as A."""

    dialogue_key: str
    turn_index: int
    stage: str
    round: int
    first_key: str  # draft key of the candidate shown first
    second_key: str
    p_first: float  # the judge's probability of A, B and a tie (renormalised over the three)
    p_second: float
    p_tie: float
    call_key: str


@dataclass
class Turn:
    index: int
    question: str
    answer: str
    caption: str
    image_key: str | None
    scores: dict[str, float]  # combined score per dimension, from the kept draft of the stage that judged it
    source_key: str | None = None  # the user's picture ``image_key`` was edited from; None when made from text


@dataclass
class PriorDraft:
    """A committed draft as a refresh forecast sees it."""

    seed_key: str
    turn_index: int
    stage: str
    round: int
    calls: dict[str, int]  # role -> calls this draft made
    candidate: int = 0


@dataclass
class DialogueJudgement:
    """The dialogue-level dimensions (InterMT's five) judged once the last turn is made, over all its turns and
    pictures."""

    scores: list[Score] = field(default_factory=list)  # combined and per-scorer, per dimension
    critique: str = ""
    call_keys: list[str] = field(default_factory=list)
    failure: str = ""  # why it could not be judged

    def combined(self) -> dict[str, float]:
        return {s.dimension: s.value for s in self.scores if s.scorer == "combined"}


@dataclass
class Dialogue:
    dialogue_id: str  # stable across runs: derived from the seed
    dialogue_key: str  # changes when anything that determines the dialogue changes
    seed: Seed
    turns: list[Turn]
    drafts: list[Draft]
    failure: str  # why generation stopped early ("" when every turn was made); acceptance is decided later
    judgement: DialogueJudgement | None = None  # when the job weights dialogue-level dimensions
    comparisons: list[Comparison] = field(default_factory=list)  # pairwise judging of candidates (seir.pairwise)

    def dialogue_scores(self) -> dict[str, float]:
        return self.judgement.combined() if self.judgement else {}

    def messages(self, image_path: Any) -> list[dict[str, Any]]:
        """The dialogue in the chat-template convention; ``image_path(key)`` names where an image is stored. The images
        the user brings in a turn come before that turn's question, as they were shown to the writer."""
        messages: list[dict[str, Any]] = []
        for turn in self.turns:
            shown = [{"type": "image", "image": image_path(key)} for key in self.seed.images_of_turn(turn.index)]
            messages.append({"role": "user", "content": [*shown, {"type": "text", "text": turn.question}]})
            answer: list[dict[str, Any]] = [{"type": "text", "text": turn.answer}]
            if turn.image_key:
                answer.append({"type": "image", "image": image_path(turn.image_key)})
            messages.append({"role": "assistant", "content": answer})
        return messages
