"""Acceptance: decided from stored scores alone, so new thresholds re-decide a dataset without regenerating it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from seir.operators.scoring.combine import CombinedScores, passes


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str  # "" when accepted
    turns_accepted: tuple[bool, ...]


def decide(failure: str, turn_scores: Sequence[Mapping[str, float]], thresholds: Mapping[str, float]) -> Decision:
    """A dialogue is accepted when generation did not fail and every turn meets every threshold."""
    verdicts = [passes(CombinedScores(scores=dict(scores)), thresholds) for scores in turn_scores]
    if failure:
        return Decision(False, failure, tuple(ok for ok, _ in verdicts))
    reasons = [
        f"turn {index + 1}: " + ", ".join(_shortfall(scores, dim, thresholds[dim]) for dim in failing)
        for index, (scores, (ok, failing)) in enumerate(zip(turn_scores, verdicts, strict=True)) if not ok
    ]
    return Decision(not reasons, "; ".join(reasons), tuple(ok for ok, _ in verdicts))


def _shortfall(scores: Mapping[str, float], dimension: str, threshold: float) -> str:
    if dimension not in scores:
        return f"{dimension} not scored"
    return f"{dimension} {scores[dimension]:.2f} < {threshold:.2f}"
