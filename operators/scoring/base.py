"""What every scorer returns, so their outputs combine (``combine.py``) and land in provenance side by side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from seir.operators.base import Operator
from seir.operators.scoring.rubrics import View


@dataclass
class ScorerResult:
    """One scorer's verdict on one turn (or dialogue)."""

    scorer: str
    scores: dict[str, float] = field(default_factory=dict)  # dimension -> 0-5, for the dimensions it informs
    raw: dict[str, float] = field(default_factory=dict)  # its own measurements in their native units
    reasons: list[str] = field(default_factory=list)  # bad or missing input, truncation, an off-format judge
    critique: str | None = None  # judge only
    call_keys: list[str] = field(default_factory=list)  # the model calls behind it, when the caller keys them
    methods: dict[str, str] = field(default_factory=dict)  # dimension -> how its score was read, for judges
    failure: str = ""  # why it could not be scored at all (a request that cannot fit the model's window)


# What a ``TurnView`` holds: the inputs a scorer may read.
TURN_INPUTS = ("question", "answer", "caption", "image", "history", "source")


class Scorer(Operator):
    """Scores a batch of views. Model-backed scorers take the backend's batch methods as callables, so the same
    scorer runs on a local model or a server, inside or outside an actor.

    The engine builds one by keyword: each backend method it declares in ``roles`` (and in ``optional_roles``, when
    the job has the role) as a batch callable named after the method (``chat=``, ``score=``, ``embed=``,
    ``similarity=``), plus whichever of these job settings its constructor names: ``sampling`` (its first role's),
    ``dimensions`` (those of the stage being scored), ``question_words``, ``caption_words``, ``target_side`` (the
    longer side of a generated image) and ``window`` (its first role's context window, to fit requests to). A
    plugin scorer given as ``module:Class`` is built the same way."""

    kind: ClassVar[str] = "scorer"
    informs: ClassVar[tuple[str, ...]] = ()  # dimensions it can give a 0-5 value for

    def score_turns(self, views: Sequence[View]) -> list[ScorerResult]:
        raise NotImplementedError
