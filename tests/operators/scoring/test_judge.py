"""The judge scorer: critique first, then the expectation over score tokens, on the real tiny judge and on
server-like callables; missing inputs score 0 without a model call; bad inputs become reasons."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from seir.operators.backends.base import ChatRequest, ChatResult, Sampling, ScoreRequest, ScoreResult
from seir.operators.registry import lookup
from seir.operators.scoring.judge import JudgeScorer
from seir.operators.scoring.rubrics import (
    INTERMT_DIALOGUE,
    INTERMT_TURN,
    RUBRICS,
    SYNJUDGE,
    DialogueView,
    TurnView,
    suggested_caption,
)


def png(colour: str = "teal", size: int = 48, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


TURN = TurnView("How do I fold a paper boat?", "Fold a sheet in half, then fold the corners down to the middle.",
                "A paper boat floating in a puddle.", png(), [("What paper should I use?", "Printer paper works.")])


@pytest.fixture(scope="module")
def tiny_judge(tiny_models: dict[str, Path]):
    from seir.operators.backends.transformers_vision import TransformersVisionChat

    return TransformersVisionChat(str(tiny_models["judge"]))


SHORT = Sampling(max_new_tokens=12)  # a tiny model's critique is noise anyway; keep the suite fast


def hand_expectation(processor: Any, model: Any, request: ScoreRequest) -> float:
    """The score read done by hand: tokenise prompt + prefix + each label, feed the tokens all labels share, take
    the softmax over the whole vocabulary at the first token where they part, renormalise over the labels."""
    messages = [{**m, "content": [{"type": "image"} if p["type"] == "image" else p for p in m["content"]]}
                for m in request.messages]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = Image.open(io.BytesIO(TURN.image)).convert("RGB")
    encoded = [processor(text=[prompt + request.answer_prefix + label], images=[image], add_special_tokens=False,
                         return_tensors="pt") for label in request.labels]
    ids = [e["input_ids"][0].tolist() for e in encoded]
    shared = 0
    while all(len(i) > shared for i in ids) and len({i[shared] for i in ids}) == 1:
        shared += 1
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids[0][:shared]]), pixel_values=encoded[0]["pixel_values"]).logits
    probabilities = logits[0, -1].double().softmax(-1)
    label_p = [probabilities[i[shared]].item() for i in ids]
    return sum(p * int(label) for p, label in zip(label_p, request.labels, strict=True)) / sum(label_p)


def test_expectation_equals_a_hand_computation_on_the_tiny_judges_logits(tiny_judge, tiny_models) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models["judge"])
    model = AutoModelForImageTextToText.from_pretrained(tiny_models["judge"], dtype=torch.float32).eval()
    sent: list[ScoreRequest] = []

    def recording_score(requests: list[ScoreRequest]) -> list[ScoreResult]:
        sent.extend(requests)
        return tiny_judge.score(requests)

    result = JudgeScorer(tiny_judge.chat, recording_score, sampling=SHORT).score_turns([TURN])[0]
    assert result.critique is not None and [r.labels for r in sent] == [SYNJUDGE["text_content"].labels] * 4
    for request, dimension in zip(sent, SYNJUDGE.values(), strict=True):
        assert request.answer_prefix.startswith(result.critique.strip())  # critique first, then the score line
        assert request.answer_prefix.endswith(f"{dimension.title} score (0-5): ")
        assert result.raw[dimension.name] == pytest.approx(hand_expectation(processor, model, request), abs=1e-5)
        assert result.scores[dimension.name] == pytest.approx(result.raw[dimension.name])


def test_intermt_nine_dimensions_on_turns_and_dialogues(tiny_judge) -> None:
    judge = JudgeScorer(tiny_judge.chat, tiny_judge.score, dimensions=list(RUBRICS["intermt"]), sampling=SHORT)
    turn, dialogue = judge.score_turns([TURN, DialogueView([TURN, TURN])])
    assert set(turn.scores) == set(INTERMT_TURN) and set(dialogue.scores) == set(INTERMT_DIALOGUE)
    for result in (turn, dialogue):
        for name, value in result.scores.items():
            assert 0.0 <= result.raw[name] <= 3.0
            assert value == pytest.approx(result.raw[name] * 5 / 3)
            assert 0.0 < result.raw[f"{name}.label_mass"] <= 1.0
        assert isinstance(result.critique, str)


class Server:
    """Stands in for an OpenAI-compatible judge: fixed replies, every request recorded."""

    def __init__(self, critique: str, probabilities: list[float], label_mass: float = 0.9) -> None:
        self.critique, self.probabilities, self.label_mass = critique, probabilities, label_mass
        self.chats: list[ChatRequest] = []
        self.scores: list[ScoreRequest] = []

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        self.chats.extend(requests)
        return [ChatResult(self.critique, 100, 20, "stop") for _ in requests]

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        self.scores.extend(requests)
        expectation = sum(p * i for i, p in enumerate(self.probabilities))
        return [ScoreResult(self.probabilities, expectation, self.label_mass, 100) for _ in requests]


def test_server_callables_work_unchanged_and_the_critique_carries_the_caption_suggestion() -> None:
    server = Server("The boat has no sail.\nBetter caption: A white paper boat with a folded sail on a puddle.",
                    [0, 0, 0, 0.5, 0.5, 0])
    result = lookup("scorer", "judge")(server.chat, server.score).score_turns([TURN])[0]
    assert result.scores == dict.fromkeys(SYNJUDGE, 3.5)
    assert result.critique is not None  # the loop reads the suggestion from the critique
    assert suggested_caption(result.critique) == "A white paper boat with a folded sail on a puddle."
    assert len(server.chats) == 1 and len(server.scores) == 4
    assert all(r.messages == server.chats[0].messages for r in server.scores)  # one prompt: a prefix-cache hit


def test_missing_inputs_score_zero_without_asking_the_model() -> None:
    server = Server("none", [0, 0, 0, 0, 0, 1])
    question_only, no_picture = JudgeScorer(server.chat, server.score).score_turns(
        [TurnView("Why?"), TurnView(TURN.question, TURN.answer)])
    assert question_only.scores == dict.fromkeys(SYNJUDGE, 0.0) and question_only.critique is None
    assert no_picture.scores == {"text_content": 5.0, "image_content": 0.0, "image_quality": 0.0,
                                 "image_text_synergy": 0.0}
    assert "image_quality scores 0: no image" in no_picture.reasons
    assert len(server.chats) == 1 and [r.labels for r in server.scores] == [SYNJUDGE["text_content"].labels]
    assert JudgeScorer(server.chat, server.score).score_turns([TurnView("")])[0].scores["text_content"] == 0.0
    assert len(server.chats) == 1  # nothing to ask: no call at all


def test_bad_inputs_become_reasons_not_crashes() -> None:
    server = Server("none", [0, 0, 1, 0, 0, 0], label_mass=0.1)
    views = [TurnView(TURN.question, TURN.answer, TURN.caption, b"not a picture"),
             TurnView(TURN.question, "x " * 10_000, TURN.caption, png(size=1)),
             TurnView(TURN.question, TURN.answer, TURN.caption, png(mode="CMYK", fmt="JPEG"))]
    broken, huge, cmyk = JudgeScorer(server.chat, server.score, max_chars=1000).score_turns(views)
    assert broken.scores["image_quality"] == 0.0 and any("does not decode" in r for r in broken.reasons)
    assert "answer truncated from 20000 to 1000 characters" in huge.reasons
    assert any("too small" in r for r in huge.reasons)
    assert "image converted from mode CMYK" in cmyk.reasons and cmyk.scores["image_quality"] == 2.0
    sent = [p["image"] for r in server.chats for p in r.messages[0]["content"] if p["type"] == "image"]
    assert [Image.open(io.BytesIO(data)).mode for data in sent] == ["RGB"]
    assert any("off-format" in r for r in cmyk.reasons)


def test_config_names_dimensions_and_fingerprints_the_prompts() -> None:
    server = Server("none", [1, 0, 0, 0, 0, 0])
    synjudge = JudgeScorer(server.chat, server.score).config()
    intermt = JudgeScorer(server.chat, server.score, dimensions=list(RUBRICS["intermt"])).config()
    assert synjudge["dimensions"] == list(SYNJUDGE) and synjudge["prompts"] != intermt["prompts"]
    assert synjudge == JudgeScorer(server.chat, server.score).config()
    with pytest.raises(ValueError, match="unknown dimensions"):
        JudgeScorer(server.chat, server.score, dimensions=["vibes"])
