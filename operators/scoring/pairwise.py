"""Pairwise judging (InterMT's local comparisons): the judge sees two candidates for the same turn and says which is
better, read as its next-token probabilities over "A", "B" and "tie" (``rubrics.comparison_request``). Every pair is
asked in both orders, so a judge that favours whichever comes first favours each candidate once and the bias
cancels in ``preference``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from seir.operators.backends.base import ScoreRequest, ScoreResult
from seir.operators.base import Operator
from seir.operators.limits import INTERSYN_LIMITS, WordLimits
from seir.operators.scoring.judge import dimensions_named
from seir.operators.scoring.rubrics import TurnView, comparison_request

Score = Callable[[list[ScoreRequest]], list[ScoreResult]]


@dataclass(frozen=True)
class Reading:
    """One order of one comparison: the judge's probability of A (the first shown), B and a tie."""

    p_first: float
    p_second: float
    p_tie: float
    call_key: str


def preference(first_shown_first: Reading, second_shown_first: Reading) -> float:
    """How much the judge prefers the first candidate of a pair over the second, 0-1 (0.5: no preference), from
    both orders: its win probability in each, a tie counting half, averaged."""
    return ((first_shown_first.p_first + first_shown_first.p_tie / 2)
            + (second_shown_first.p_second + second_shown_first.p_tie / 2)) / 2


class PairwiseJudge(Operator):
    name: ClassVar[str] = "pairwise-judge"
    roles: ClassVar[dict[str, tuple[str, ...]]] = {"judge": ("score", "vision")}
    reads: ClassVar[tuple[str, ...]] = ("question", "answer", "caption", "image", "history")

    def __init__(self, score: Score, dimensions: Sequence[str], limits: WordLimits = INTERSYN_LIMITS) -> None:
        self.score = score
        self.dimensions = dimensions_named(dimensions)
        self.limits = limits

    def compare(self, pairs: Sequence[tuple[TurnView, TurnView]],
                candidate_fields: Sequence[str]) -> list[tuple[Reading, Reading]]:
        """Each pair read in both orders, in one batch: (the pair as given, the pair swapped)."""
        requests = [comparison_request(self.dimensions, a, b, candidate_fields, self.limits)
                    for first, second in pairs for a, b in ((first, second), (second, first))]
        readings = [Reading(*result.probabilities, result.call_key) for result in self.score(requests)]
        return list(zip(readings[::2], readings[1::2], strict=True))
