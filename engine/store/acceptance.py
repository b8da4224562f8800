"""Acceptance: decided from stored scores alone, so new thresholds re-decide a dataset without regenerating it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from seir.operators.scoring.combine import CombinedScores, ScoringConfig, passes
from seir.operators.scoring.rubrics import DIMENSIONS


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str  # "" when accepted
    turns_accepted: tuple[bool, ...]


@dataclass(frozen=True)
class HumanSays:
    """What people said of one dialogue (``human_verdicts``): per turn, the mean over annotators of each one's
    latest score per dimension; the latest accept or reject of each turn and of the whole dialogue."""

    scores: Mapping[int, Mapping[str, float]] = field(default_factory=dict)
    turns: Mapping[int, str] = field(default_factory=dict)
    dialogue: str | None = None


def decide(failure: str, turn_scores: Sequence[Mapping[str, float]], thresholds: Mapping[str, float],
           dialogue_scores: Mapping[str, float] | None = None, human: HumanSays | None = None,
           scoring: ScoringConfig | None = None) -> Decision:
    """A dialogue is accepted when generation did not fail, every turn meets every turn-level threshold and the
    dialogue's own scores meet the dialogue-level ones (InterMT's five dimensions). People's verdicts count as
    ``scoring.human`` says (``ScoringConfig``): not at all, instead of the judge, or weighed beside it."""
    counted = human if scoring is not None and scoring.human != "off" else None
    final = counted if scoring is not None and scoring.human == "override" else None  # their accept or reject too
    if counted is not None and scoring is not None:
        weight = 1.0 if final is not None else scoring.human_weight  # override: theirs instead of the judge's
        turn_scores = [_with_people(scores, counted.scores.get(index, {}), weight)
                       for index, scores in enumerate(turn_scores)]
    per_turn = {d: t for d, t in thresholds.items() if not DIMENSIONS[d].per_dialogue}
    whole = {d: t for d, t in thresholds.items() if DIMENSIONS[d].per_dialogue}
    verdicts = [passes(CombinedScores(scores=dict(scores)), per_turn) for scores in turn_scores]
    said = final.turns if final is not None else {}
    verdicts = [(said[i] == "accept", [] if said[i] == "accept" else [_REJECTED]) if i in said else v
                for i, v in enumerate(verdicts)]
    if failure:
        return Decision(False, failure, tuple(ok for ok, _ in verdicts))
    reasons = [
        f"turn {index + 1}: " + ", ".join(dim if dim == _REJECTED else _shortfall(scores, dim, per_turn[dim])
                                          for dim in failing)
        for index, (scores, (ok, failing)) in enumerate(zip(turn_scores, verdicts, strict=True)) if not ok
    ]
    scores = dict(dialogue_scores or {})
    ok, failing = passes(CombinedScores(scores=scores), whole)
    if not ok:
        reasons.append("dialogue: " + ", ".join(_shortfall(scores, dim, whole[dim]) for dim in failing))
    turns_accepted = tuple(ok for ok, _ in verdicts)
    if final is not None and final.dialogue is not None:
        return Decision(final.dialogue == "accept", "" if final.dialogue == "accept" else f"dialogue: {_REJECTED}",
                        turns_accepted)
    return Decision(not reasons, "; ".join(reasons), turns_accepted)


_REJECTED = "rejected by a person"


def _with_people(scores: Mapping[str, float], people: Mapping[str, float], weight: float) -> dict[str, float]:
    """A turn's scores with people's weighed in at ``weight`` (1: theirs instead); theirs alone where the judge gave
    none."""
    merged = dict(scores)
    for dimension, value in people.items():
        judged = scores.get(dimension)
        merged[dimension] = value if judged is None else (1 - weight) * judged + weight * value
    return merged


def _shortfall(scores: Mapping[str, float], dimension: str, threshold: float) -> str:
    if dimension not in scores:
        return f"{dimension} not scored"
    return f"{dimension} {scores[dimension]:.2f} < {threshold:.2f}"
