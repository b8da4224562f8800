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
    suggested_caption: str | None = None  # judge only, when an image dimension was critiqued
    call_keys: list[str] = field(default_factory=list)  # the model calls behind it, when the caller keys them


class Scorer(Operator):
    """Scores a batch of views. Model-backed scorers take the backend's batch methods as callables, so the same
    scorer runs on a local model or a server, inside or outside an actor."""

    kind: ClassVar[str] = "scorer"
    informs: ClassVar[tuple[str, ...]] = ()  # dimensions it can give a 0-5 value for

    def score_turns(self, views: Sequence[View]) -> list[ScorerResult]:
        raise NotImplementedError
