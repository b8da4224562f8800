"""Combining scorers: per-dimension weights over scorers, thresholds per dimension, and the gate.

Every scorer's own value stays beside the combined one, so a provenance query can always say which scorer
pulled a turn under its threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from seir.operators.scoring.base import ScorerResult
from seir.operators.scoring.rubrics import DIMENSIONS, RUBRICS

_SEIR = tuple(RUBRICS["seir"])  # the dimensions the SEIR loop scores: question and SynJudge's four


def _judge_only() -> dict[str, dict[str, float]]:
    return {dimension: {"judge": 1.0} for dimension in _SEIR}


def _default_thresholds() -> dict[str, float]:
    return dict.fromkeys(_SEIR, 3.0)


class ScoringConfig(BaseModel):
    """``weights[dimension][scorer]`` (non-negative; normalised over the scorers that gave a value) and
    ``thresholds[dimension]`` on 0-5. By default the judge alone decides, and a turn needs 3 on every dimension.

    ``human``: what people's verdicts (``seir view``, ``seir verdicts import``) do to acceptance. ``off`` (default):
    nothing; ``override``: a person's score replaces the combined one on its dimension, and their accept or reject of
    a turn or dialogue is final; ``weight``: a person's score counts ``human_weight`` beside the combined one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: dict[str, dict[str, float]] = Field(default_factory=_judge_only)
    thresholds: dict[str, float] = Field(default_factory=_default_thresholds)
    human: Literal["off", "override", "weight"] = "off"
    human_weight: float = Field(default=0.5, ge=0.0, le=1.0)

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        # Left out while unused, so every job written before verdicts existed keeps its keys.
        dumped = handler(self)
        if self.human == "off" and self.human_weight == 0.5:
            dumped.pop("human", None)
            dumped.pop("human_weight", None)
        return dumped

    @model_validator(mode="after")
    def _check(self) -> ScoringConfig:
        for dimension, by_scorer in self.weights.items():
            _known(dimension, "weights")
            if not by_scorer or any(not math.isfinite(w) or w < 0 for w in by_scorer.values()):
                raise ValueError(f"weights.{dimension}: give each scorer a finite weight >= 0")
            if sum(by_scorer.values()) <= 0:
                raise ValueError(f"weights.{dimension}: the weights must not all be 0")
        for dimension, threshold in self.thresholds.items():
            _known(dimension, "thresholds")
            if not 0.0 <= threshold <= 5.0:
                raise ValueError(f"thresholds.{dimension}: {threshold} is outside 0-5")
            if dimension not in self.weights:
                raise ValueError(f"thresholds.{dimension}: no scorer is weighted for it, so it could never pass")
        return self

    def scorers(self) -> list[str]:
        """The scorers this config needs to run."""
        return sorted({scorer for by_scorer in self.weights.values() for scorer in by_scorer})


def _known(dimension: str, where: str) -> None:
    if dimension not in DIMENSIONS:
        raise ValueError(f"{where}.{dimension}: unknown dimension; known: {', '.join(DIMENSIONS)}")


@dataclass
class CombinedScores:
    scores: dict[str, float] = field(default_factory=dict)  # dimension -> weighted 0-5
    parts: dict[str, dict[str, float]] = field(default_factory=dict)  # dimension -> scorer -> its 0-5 value
    raw: dict[str, dict[str, float]] = field(default_factory=dict)  # scorer -> its raw measurements
    reasons: dict[str, list[str]] = field(default_factory=dict)  # scorer -> its reasons
    missing: dict[str, list[str]] = field(default_factory=dict)  # dimension -> weighted scorers that gave nothing


def combine(raw_by_scorer: Mapping[str, ScorerResult], config: ScoringConfig | None = None) -> CombinedScores:
    """One turn's scorer results into one 0-5 value per weighted dimension. A weighted scorer that gave no value
    is listed in ``missing`` and the others' weights are renormalised; a dimension nobody scored is left out."""
    config = config or ScoringConfig()
    combined = CombinedScores(raw={name: dict(r.raw) for name, r in raw_by_scorer.items()},
                              reasons={name: list(r.reasons) for name, r in raw_by_scorer.items() if r.reasons})
    for dimension, weights in config.weights.items():
        parts = {s: raw_by_scorer[s].scores[dimension] for s in weights
                 if s in raw_by_scorer and dimension in raw_by_scorer[s].scores}
        missing = [s for s in weights if s not in parts]
        if missing:
            combined.missing[dimension] = missing
        total = sum(weights[s] for s in parts)
        if parts:
            combined.parts[dimension] = parts
        if total > 0:
            combined.scores[dimension] = sum(weights[s] * value for s, value in parts.items()) / total
    return combined


def passes(combined: CombinedScores, thresholds: Mapping[str, float]) -> tuple[bool, list[str]]:
    """(every threshold met, the failing dimensions). A dimension without a combined score fails: what was not
    measured is not passed."""
    failing = [d for d, t in thresholds.items() if d not in combined.scores or combined.scores[d] < t]
    return not failing, failing
