"""The fitting policy on real prompts counted by the tiny models' real tokenizers: what goes first, what never goes,
the marker, determinism, and the message when nothing fits."""

from __future__ import annotations

import io
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest
from PIL import Image

from seir.operators.backends.base import ChatRequest, Sampling, image_parts
from seir.operators.backends.transformers_chat import TransformersChat
from seir.operators.backends.transformers_vision import TransformersVisionChat
from seir.operators.context import DoesNotFit, Trim, Window, cut_middle, trims
from seir.operators.scoring.rubrics import SYNJUDGE, TurnView, critique_messages
from seir.operators.stages.prompts import History, answer_messages, question_messages


def picture(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (shade, 90, 200)).save(out, format="PNG")
    return out.getvalue()


EARLIER = History(tuple((f"question {n} about the harbor and its boats", " ".join(["answer"] * 60) + f" {n}")
                        for n in range(1, 9)),
                  ((picture(1),), (), (picture(2), picture(3)), (), (), (), (), (picture(4),)))
SHOWN_NOW = (picture(9),)


@pytest.fixture(scope="module")
def vision_window(tiny_models: dict[str, Path]) -> Window:
    limit, counter = TransformersVisionChat.offline_context(str(tiny_models["judge"]))
    assert limit == 4096 and counter is not None
    return Window("llm", limit, counter, "model config")


def answer(history: History) -> list[dict]:
    return answer_messages("What does the lighthouse look like at night?", history, images=SHOWN_NOW)


def sizes(window: Window, history: History) -> list[int]:
    return [window.counter.count(answer(history.fitted(step))) for step in trims(history.earlier())]


def test_the_steps_leave_out_pictures_then_turns_then_the_middle_of_a_reply() -> None:
    steps = trims(EARLIER.earlier())
    assert steps[:4] == [Trim(), Trim(pictures=1), Trim(pictures=3), Trim(pictures=8)]  # turns with pictures only
    assert steps[4:11] == [Trim(8, turns) for turns in range(1, 8)]
    assert [s.reply_words for s in steps[11:-1]] == [30, 15]  # the last earlier reply (61 words) halved while >= 8
    assert steps[-1] == Trim(8, 8)
    assert cut_middle("a b c d e f g h i j", 4) == "a b [...] i j"


def test_every_step_is_smaller_than_the_last(vision_window: Window) -> None:
    measured = sizes(vision_window, EARLIER)
    assert all(later < earlier for earlier, later in pairwise(measured)), measured


def test_a_request_that_fits_goes_whole(vision_window: Window) -> None:
    fitted = vision_window.fit(lambda trim: answer(EARLIER.fitted(trim)), EARLIER.earlier(), 64, "answer")
    assert fitted.trim == Trim() and fitted.messages == answer(EARLIER)


@pytest.mark.parametrize("cut", [1, 3, 6, 9, 11, 12])
def test_the_least_cut_that_fits_is_chosen_and_the_current_turn_is_whole(vision_window: Window, cut: int) -> None:
    """A window just big enough for step ``cut``: that step is chosen (not a deeper one), the marker says what was
    left out, and the picture the user shows now is in the request whatever was cut."""
    measured = sizes(vision_window, EARLIER)
    reply = 32
    window = Window("llm", measured[cut] + reply, vision_window.counter, "job")
    fitted = window.fit(lambda trim: answer(EARLIER.fitted(trim)), EARLIER.earlier(), reply, "answer")
    assert fitted.trim == trims(EARLIER.earlier())[cut]
    assert fitted.tokens + reply <= window.limit
    shown = [data for message in fitted.messages for data in image_parts(message)]
    assert shown[-1] == SHOWN_NOW[0]
    text = str(fitted.messages)
    if fitted.trim.turns:
        assert f"[turns 1-{fitted.trim.turns} omitted]" in text or "[turn 1 omitted]" in text
    if fitted.trim.pictures:
        assert "shown here, left out]" in text
    again = window.fit(lambda trim: answer(EARLIER.fitted(trim)), EARLIER.earlier(), reply, "answer")
    assert again.messages == fitted.messages  # the same inputs give the same request


def test_fixed_parts_that_overflow_fail_with_the_role_window_and_size(vision_window: Window) -> None:
    fixed = vision_window.counter.count(answer(EARLIER.fitted(Trim(8, 8))))
    window = Window("llm", fixed + 95, vision_window.counter, "job")
    with pytest.raises(DoesNotFit) as err:
        window.fit(lambda trim: answer(EARLIER.fitted(trim)), EARLIER.earlier(), 96, "answer")
    assert str(err.value) == f"answer request of {fixed:,} tokens with 96 to write does not fit llm's {fixed + 95:,}"


def test_counts_are_the_tokens_the_backend_reads(tiny_models: dict[str, Path]) -> None:
    """The counter's number is the backend's own ``tokens_in`` for the same request: text and pictures alike."""
    backend = TransformersVisionChat(str(tiny_models["judge"]))
    _, counter = backend.context()
    messages = question_messages("Tell me about these photos.", EARLIER, 50, images=SHOWN_NOW)
    result = backend.chat([ChatRequest(messages, Sampling(max_new_tokens=1))])[0]
    assert counter.count(messages) == result.tokens_in
    text_backend = TransformersChat(str(tiny_models["llm"]))
    _, text_counter = text_backend.context()
    plain = [{"role": "user", "content": "How do lighthouses work?"}]
    assert text_counter.count(plain) == text_backend.chat([ChatRequest(plain, Sampling(max_new_tokens=1))])[0].tokens_in


def test_the_judge_sees_the_marker_and_keeps_the_turn_under_review(vision_window: Window) -> None:
    view = TurnView("And the boats?", "They rest in the harbor.", "Boats at dusk", picture(7),
                    history=list(EARLIER.turns), shown=[picture(8)], history_shown=[list(p) for p in EARLIER.images])
    dimensions = list(SYNJUDGE.values())
    whole = vision_window.counter.count(critique_messages(dimensions, view))
    window = Window("judge", whole - 40, vision_window.counter, "job")
    fitted = window.fit(lambda trim: critique_messages(dimensions, replace(view, trim=trim)), view.earlier(), 0,
                        "critique")
    text = str(fitted.messages)
    assert fitted.trim != Trim() and "User: And the boats?" in text and "Caption: Boats at dusk" in text
    pictures = [data for message in fitted.messages for data in image_parts(message)]
    assert pictures[-2:] == [picture(8), picture(7)]  # the user's picture of this turn, then the one made
