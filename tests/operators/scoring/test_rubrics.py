"""Rubrics: every dimension's prompts render, score requests follow the critique, critic replies are read robustly."""

from __future__ import annotations

import pytest

from seir.operators.limits import WordLimits
from seir.operators.scoring.rubrics import (
    DIMENSIONS,
    INTERMT_DIALOGUE,
    INTERMT_TURN,
    QUESTION,
    RUBRICS,
    SYNJUDGE,
    DialogueView,
    Dimension,
    TurnView,
    critique_finds_nothing,
    critique_messages,
    missing_input_score,
    score_request,
    suggested_caption,
)

IMAGE = b"\x89PNG-stand-in"  # rendering never decodes the picture


def full_turn(image: bytes | None) -> TurnView:
    return TurnView("How do I fold a paper crane?", "Start with a square sheet and fold it diagonally.",
                    "Hands folding a blue square of paper into a triangle.", image,
                    [("What paper works best for origami?", "Thin, crisp kami paper.")])


def view_for(dimension: Dimension, image: bytes | None) -> TurnView | DialogueView:
    turn = full_turn(image)
    return DialogueView([turn, turn]) if dimension.per_dialogue else turn


def texts(messages: list[dict]) -> str:
    return "".join(p["text"] for m in messages for p in m["content"] if p["type"] == "text")


def images(messages: list[dict]) -> list[bytes]:
    return [p["image"] for m in messages for p in m["content"] if p["type"] == "image"]


def test_the_rubrics_hold_the_published_dimensions_and_scales() -> None:
    assert list(SYNJUDGE) == ["text_content", "image_content", "image_quality", "image_text_synergy"]
    assert len(INTERMT_TURN) == 4 and len(INTERMT_DIALOGUE) == 5
    assert {d.scale for d in SYNJUDGE.values()} == {(0, 5)} and QUESTION.scale == (0, 5)
    assert {d.scale for d in RUBRICS["intermt"].values()} == {(0, 3)}
    assert all(d.per_dialogue for d in INTERMT_DIALOGUE.values())
    assert not any(d.per_dialogue for d in (*SYNJUDGE.values(), *INTERMT_TURN.values(), QUESTION))
    assert SYNJUDGE["text_content"].labels == ("0", "1", "2", "3", "4", "5")
    assert INTERMT_TURN["text_quality"].labels == ("0", "1", "2", "3")
    assert len(DIMENSIONS) == 14


@pytest.mark.parametrize("with_image", [True, False], ids=["image", "no-image"])
@pytest.mark.parametrize("name", list(DIMENSIONS))
def test_every_dimension_renders(name: str, with_image: bool) -> None:
    dimension = DIMENSIONS[name]
    view = view_for(dimension, IMAGE if with_image else None)
    messages = critique_messages([dimension], view)
    body = texts(messages)
    assert [m["role"] for m in messages] == ["user"]
    assert dimension.rubric_for(WordLimits()) in body and all(anchor in body for anchor in dimension.anchors.values())
    assert "How do I fold a paper crane?" in body and "only the word none" in body
    shown = [IMAGE, IMAGE] if dimension.per_dialogue else [IMAGE]
    assert images(messages) == (shown if with_image else [])
    asks_caption = "Better caption:" in body
    assert asks_caption == (with_image and "image" in dimension.needs)

    request = score_request(dimension, view, "The fold lines are unclear.\nnone")
    assert request.messages == messages
    low, high = dimension.scale
    assert request.answer_prefix == f"The fold lines are unclear.\nnone\n\n{dimension.title} score ({low}-{high}): "
    assert request.labels == dimension.labels


def test_a_stage_critique_covers_all_its_dimensions_and_score_requests_share_its_prompt() -> None:
    stage = [SYNJUDGE["image_content"], SYNJUDGE["image_quality"], SYNJUDGE["image_text_synergy"]]
    view = full_turn(IMAGE)
    messages = critique_messages(stage, view)
    assert all(d.title.lower() in texts(messages) for d in stage)
    for dimension in stage:
        assert score_request(dimension, view, "ok", stage).messages == messages  # one prefix for a server's cache
    assert score_request(stage[0], view, "  ").answer_prefix == "Image content score (0-5): "


def test_question_stage_shows_history_and_no_answer() -> None:
    view = TurnView("And which fold comes next?", history=[("How do I start?", "Fold the square in half.")])
    body = texts(critique_messages([QUESTION], view))
    assert "Earlier in the conversation" in body and "Fold the square in half." in body
    assert "Assistant: (empty" not in body.split("The turn to review:")[1]


def test_views_must_match_the_dimension_level() -> None:
    with pytest.raises(ValueError, match="DialogueView"):
        critique_messages([INTERMT_DIALOGUE["helpfulness"]], full_turn(None))
    with pytest.raises(ValueError, match="TurnView"):
        critique_messages([SYNJUDGE["text_content"]], DialogueView([full_turn(None)]))
    with pytest.raises(ValueError, match="at least one"):
        critique_messages([], full_turn(None))


def test_missing_inputs_score_zero() -> None:
    assert missing_input_score(SYNJUDGE["image_quality"], full_turn(None)) == 0.0
    assert missing_input_score(SYNJUDGE["image_quality"], full_turn(IMAGE)) is None
    assert missing_input_score(SYNJUDGE["text_content"], TurnView("Why?", answer="   ")) == 0.0
    assert missing_input_score(QUESTION, TurnView("Why is the sky blue?")) is None
    dialogue = DialogueView([full_turn(None)])
    assert missing_input_score(INTERMT_DIALOGUE["helpfulness"], dialogue) is None
    assert missing_input_score(INTERMT_DIALOGUE["style_coherence"], dialogue) == 0.0
    assert missing_input_score(INTERMT_DIALOGUE["helpfulness"], DialogueView([])) == 0.0


@pytest.mark.parametrize("critique", ["none", "None.", "**None**", "  NONE!  ", "The answer is complete.\n\nnone",
                                      "Fixes: none", "Looks right.\nBetter caption: none"])
def test_critic_found_nothing(critique: str) -> None:
    assert critique_finds_nothing(critique)


@pytest.mark.parametrize("critique", ["", "   ", "Add the missing step.", "none of the steps are explained",
                                      "Wrong colour.\nBetter caption: A red crane on a desk.\nnone",
                                      "Nonetheless, fine."])
def test_critic_found_something(critique: str) -> None:
    assert not critique_finds_nothing(critique)


@pytest.mark.parametrize(("critique", "caption"), [
    ("The crane is missing.\nBetter caption: A folded paper crane on a desk.", "A folded paper crane on a desk."),
    ("**Better caption:** \"A crane with\nspread wings.\"\n\nOther notes.", "A crane with spread wings."),
    ("better caption : first\nmore text\nBetter Caption: second", "second"),
    ("Better caption: none", None),
    ("The picture matches.\nnone", None),
])
def test_suggested_caption(critique: str, caption: str | None) -> None:
    assert suggested_caption(critique) == caption


def test_dimension_validates_its_own_definition() -> None:
    with pytest.raises(ValueError, match="unknown inputs"):
        Dimension("x", "X", (0, 1), frozenset({"audio"}), "r", {0: "a", 1: "b"})
    with pytest.raises(ValueError, match="every level"):
        Dimension("x", "X", (0, 2), frozenset({"answer"}), "r", {0: "a", 2: "c"})
    assert SYNJUDGE["text_content"].to_0_5(5.0) == 5.0 and INTERMT_TURN["text_quality"].to_0_5(1.5) == 2.5


def test_rubrics_and_the_suggested_caption_hold_the_jobs_word_limits() -> None:
    limits = WordLimits(question=23, caption=41)
    question = texts(critique_messages([QUESTION], full_turn(IMAGE), limits))
    caption = texts(critique_messages([SYNJUDGE["image_content"]], full_turn(IMAGE), limits))
    assert "within 23 words" in question and "within 50 words" not in question
    assert "at most 41 words" in caption and "65" not in caption
    assert score_request(QUESTION, full_turn(IMAGE), "none", None, limits).messages == \
        critique_messages([QUESTION], full_turn(IMAGE), limits)
