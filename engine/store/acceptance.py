"""Acceptance: decided from stored scores alone, so new thresholds re-decide a dataset without regenerating it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from seir.operators.scoring.combine import CombinedScores, passes
from seir.operators.scoring.rubrics import DIMENSIONS


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str  # "" when accepted
    turns_accepted: tuple[bool, ...]


def decide(failure: str, turn_scores: Sequence[Mapping[str, float]], thresholds: Mapping[str, float],
           dialogue_scores: Mapping[str, float] | None = None) -> Decision:
    """A dialogue is accepted when generation did not fail, every turn meets every turn-level threshold and the
    dialogue's own scores meet the dialogue-level ones (InterMT's five dimensions)."""
    per_turn = {d: t for d, t in thresholds.items() if not DIMENSIONS[d].per_dialogue}
    whole = {d: t for d, t in thresholds.items() if DIMENSIONS[d].per_dialogue}
    verdicts = [passes(CombinedScores(scores=dict(scores)), per_turn) for scores in turn_scores]
    if failure:
        return Decision(False, failure, tuple(ok for ok, _ in verdicts))
    reasons = [
        f"turn {index + 1}: " + ", ".join(_shortfall(scores, dim, per_turn[dim]) for dim in failing)
        for index, (scores, (ok, failing)) in enumerate(zip(turn_scores, verdicts, strict=True)) if not ok
    ]
    scores = dict(dialogue_scores or {})
    ok, failing = passes(CombinedScores(scores=scores), whole)
    if not ok:
        reasons.append("dialogue: " + ", ".join(_shortfall(scores, dim, whole[dim]) for dim in failing))
    return Decision(not reasons, "; ".join(reasons), tuple(ok for ok, _ in verdicts))


def _shortfall(scores: Mapping[str, float], dimension: str, threshold: float) -> str:
    if dimension not in scores:
        return f"{dimension} not scored"
    return f"{dimension} {scores[dimension]:.2f} < {threshold:.2f}"
