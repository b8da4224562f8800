"""Pictures the user brings, in the writer's prompts and the judge's: image parts where the user showed them, text-only
prompts unchanged, refused pictures left out with a reason."""

from __future__ import annotations

import io

from PIL import Image

from seir.operators.scoring.guards import guarded_view
from seir.operators.scoring.rubrics import INTERMT_DIALOGUE, SYNJUDGE, DialogueView, TurnView, critique_messages
from seir.operators.stages.prompts import (
    NEW_PICTURE,
    History,
    answer_messages,
    caption_messages,
    question_messages,
    start_from,
)


def picture(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return buffer.getvalue()


RED, GREEN, BLUE = picture("red"), picture("green"), picture("blue")


def images_in(messages: list[dict]) -> list[bytes]:
    return [part["image"] for m in messages if isinstance(m["content"], list) for part in m["content"]
            if part["type"] == "image"]


def test_writer_prompts_show_the_pictures_before_the_text_and_text_prompts_stay_strings() -> None:
    question = question_messages("What is this?", History(), 50, images=[RED, GREEN])
    assert [p["type"] for p in question[-1]["content"]] == ["image", "image", "text"]
    assert images_in(question) == [RED, GREEN]
    plain = question_messages("What is this?", History(), 50)
    assert all(isinstance(m["content"], str) for m in plain)  # text-only chat templates read plain strings
    history = History((("What is the first?", "A red square."),), ((RED,),))
    answer = answer_messages("And this one?", history, images=[GREEN])
    assert images_in(answer) == [RED, GREEN]  # the earlier turn's picture in its own user message, then this turn's
    assert [m["role"] for m in answer] == ["system", "user", "assistant", "user"]
    assert images_in(caption_messages("q", "a", 65, images=[BLUE])) == [BLUE]
    # The next question sees the pictures of earlier turns, then this turn's.
    assert images_in(question_messages("What is this?", history, 50)) == [RED]
    assert images_in(question_messages("What is this?", history, 50, images=[GREEN])) == [RED, GREEN]
    assert "showing 1 picture" in history.transcript()


def test_the_judge_sees_earlier_pictures_then_this_turns_then_the_generated_one() -> None:
    view = TurnView("And this one?", "A green square.", "a green square", BLUE, history=[("First?", "Red.")],
                    shown=[GREEN], history_shown=[[RED]])
    [message] = critique_messages([SYNJUDGE["text_content"], SYNJUDGE["image_content"]], view)
    parts = message["content"]
    assert [p["image"] for p in parts if p["type"] == "image"] == [RED, GREEN, BLUE]
    text = "".join(p["text"] for p in parts if p["type"] == "text")
    assert "The user shows 1 picture:" in text and "faithful to them" in text and "relate to them as asked" in text
    whole = DialogueView([TurnView("q1", "a1", "c1", BLUE, shown=[RED, GREEN]), TurnView("q2", "a2", "c2", None)])
    [message] = critique_messages(list(INTERMT_DIALOGUE.values()), whole)
    assert [p["image"] for p in message["content"] if p["type"] == "image"] == [RED, GREEN, BLUE]


def test_a_refused_shown_picture_is_left_out_with_its_reason() -> None:
    view = TurnView("q", shown=[RED, b"not a picture"], history=[("q0", "a0")], history_shown=[[b"", GREEN]])
    clean, reasons = guarded_view(view)
    assert clean.shown == [RED] and clean.history_shown == [[GREEN]]
    assert any(r.startswith("shown picture 2: image does not decode") for r in reasons)
    assert any(r.startswith("turn 1 shown picture 1: image is empty") for r in reasons)


def test_the_caption_asks_which_shown_picture_to_start_from_and_the_choice_is_read_loosely() -> None:
    [_, user] = caption_messages("q", "a", 65, images=[RED, GREEN, BLUE], starts=[GREEN, BLUE])
    text = user["content"][-1]["text"]
    assert "'Start from: picture N'" in text and "of the 2 the person shows" in text
    assert "Start from" not in caption_messages("q", "a", 65, images=[RED])[-1]["content"][-1]["text"]
    caption = "A cat painted in watercolour on a windowsill."
    assert start_from(f"{caption}\nStart from: picture 2", 2) == (caption, 2)
    assert start_from(f"{caption}\n**Start from:** the second photo.", 3) == (caption, 2)
    assert start_from(f"{caption}\nStarting from #1", 1) == (caption, 1)
    assert start_from(f"{caption}\nstart from: none, a new picture", 2) == (caption, NEW_PICTURE)
    assert start_from(f"{caption}\nStart from: the last one", 3) == (caption, 3)
    # A picture that is not there, a line that names nothing, or no line: the caller's default decides.
    assert start_from(f"{caption}\nStart from: picture 5", 2) == (caption, None)
    assert start_from(f"{caption}\nStart from: hmm", 2) == (caption, None)
    assert start_from(caption, 2) == (caption, None)
    # Only the last such line counts, and each is cut from the caption.
    assert start_from(f"Start from: picture 1\n{caption}\nStart from: picture 2", 2)[1] == 2


def test_the_judge_of_an_edit_sees_the_source_then_the_result() -> None:
    view = TurnView("Make it blue?", "Here it is, in blue.", "the square in blue", BLUE, shown=[RED, GREEN],
                    source=GREEN)
    [message] = critique_messages([SYNJUDGE["image_content"]], view)
    parts = message["content"]
    assert [p["image"] for p in parts if p["type"] == "image"] == [RED, GREEN, GREEN, BLUE]
    text = "".join(p["text"] if p["type"] == "text" else "<image>" for p in parts)
    assert "edited from this picture the user showed:<image>\nThe edited result:<image>" in text
    # The guard that makes pictures model-ready keeps the source.
    guarded, _ = guarded_view(view)
    assert guarded.source == GREEN
