"""Combining scorers: weights, the raw values kept beside the combination, thresholds, and config validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from seir.operators.scoring.base import ScorerResult
from seir.operators.scoring.combine import CombinedScores, ScoringConfig, combine, passes


def results() -> dict[str, ScorerResult]:
    return {
        "judge": ScorerResult("judge", {"text_content": 4.0, "image_text_synergy": 2.0, "question": 4.5},
                              {"text_content": 4.0, "text_content.label_mass": 0.9}, critique="none"),
        "text": ScorerResult("text", {"text_content": 3.0, "image_text_synergy": 5.0}, {"relevance_cosine": 0.4},
                             ["caption is empty"]),
        "clip": ScorerResult("clip", {"image_text_synergy": 1.0}, {"sim_answer": 0.3}),
    }


def test_defaults_are_judge_only_on_the_seir_dimensions() -> None:
    config = ScoringConfig()
    assert set(config.weights) == {"question", "text_content", "image_content", "image_quality", "image_text_synergy"}
    assert config.scorers() == ["judge"] and set(config.thresholds.values()) == {3.0}
    combined = combine(results())
    assert combined.scores == {"question": 4.5, "text_content": 4.0, "image_text_synergy": 2.0}
    assert combined.missing == {"image_content": ["judge"], "image_quality": ["judge"]}


def test_weighted_combination_keeps_every_scorers_value() -> None:
    config = ScoringConfig(weights={"text_content": {"judge": 0.7, "text": 0.3},
                                    "image_text_synergy": {"judge": 0.5, "text": 0.25, "clip": 0.25}},
                           thresholds={"text_content": 3.5})
    combined = combine(results(), config)
    assert combined.scores["text_content"] == pytest.approx(0.7 * 4 + 0.3 * 3)
    assert combined.scores["image_text_synergy"] == pytest.approx(0.5 * 2 + 0.25 * 5 + 0.25 * 1)
    assert combined.parts["image_text_synergy"] == {"judge": 2.0, "text": 5.0, "clip": 1.0}
    assert combined.raw["clip"] == {"sim_answer": 0.3} and combined.reasons == {"text": ["caption is empty"]}
    assert config.scorers() == ["clip", "judge", "text"]


def test_a_missing_scorer_is_recorded_and_the_rest_renormalised() -> None:
    config = ScoringConfig(weights={"text_content": {"judge": 0.6, "text": 0.4}}, thresholds={})
    combined = combine({"judge": results()["judge"]}, config)
    assert combined.scores == {"text_content": 4.0} and combined.missing == {"text_content": ["text"]}
    nobody = combine({}, config)
    assert nobody.scores == {} and nobody.missing == {"text_content": ["judge", "text"]}


def test_zero_weight_keeps_a_value_for_the_record_only() -> None:
    config = ScoringConfig(weights={"text_content": {"judge": 1.0, "text": 0.0}}, thresholds={})
    combined = combine(results(), config)
    assert combined.scores == {"text_content": 4.0} and combined.parts["text_content"] == {"judge": 4.0, "text": 3.0}


def test_passes_names_the_failing_dimensions() -> None:
    combined = CombinedScores(scores={"text_content": 3.0, "image_quality": 2.9})
    assert passes(combined, {"text_content": 3.0}) == (True, [])
    assert passes(combined, {"text_content": 3.0, "image_quality": 3.0}) == (False, ["image_quality"])
    assert passes(combined, {"image_content": 1.0}) == (False, ["image_content"])  # unmeasured is not passed


@pytest.mark.parametrize(("fields", "message"), [
    ({"weights": {"vibes": {"judge": 1.0}}, "thresholds": {}}, "unknown dimension"),
    ({"weights": {"text_content": {"judge": -1.0}}, "thresholds": {}}, "finite weight >= 0"),
    ({"weights": {"text_content": {"judge": float("nan")}}, "thresholds": {}}, "finite weight >= 0"),
    ({"weights": {"text_content": {}}, "thresholds": {}}, "finite weight >= 0"),
    ({"weights": {"text_content": {"judge": 0.0}}, "thresholds": {}}, "must not all be 0"),
    ({"thresholds": {"text_content": 6.0}}, "outside 0-5"),
    ({"weights": {"text_content": {"judge": 1.0}}, "thresholds": {"image_quality": 3.0}}, "could never pass"),
    ({"weight": {}}, "Extra inputs"),
])
def test_config_is_validated(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ScoringConfig(**fields)


def test_config_round_trips_through_json() -> None:
    config = ScoringConfig(weights={"text_content": {"judge": 0.7, "text": 0.3}}, thresholds={"text_content": 3.5})
    assert ScoringConfig.model_validate_json(config.model_dump_json()) == config
    with pytest.raises(ValidationError):
        config.thresholds = {}  # frozen: a job's config cannot drift after validation
