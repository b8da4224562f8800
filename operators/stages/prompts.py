"""Prompts of the built-in stages: the ``llm`` role writes questions, answers and captions, and rewrites them from
the judge's critique. Pure functions from typed views to chat messages; the judge's prompts live in
``seir.operators.scoring.rubrics``.

Answer and caption are asked for in two calls rather than one formatted reply, so no answer is ever lost to a
model that ignores an output format.

Pictures the user brings (a seed's images) go into the requests as image parts, where the user shows them: before
the question of their turn. Prompts without pictures keep plain string content, which text-only chat templates read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import xxhash

from seir.operators.context import Trim, left_out_note, trimmed

_SYSTEM_USER_SIDE = (
    "You write what a curious person asks an assistant that answers with both text and a picture. "
    "Questions are natural, specific, at most {words} words, and ask for something that can be drawn."
)
_SYSTEM_ASSISTANT = (
    "You are a knowledgeable assistant that answers with accurate, complete text and then describes a picture that "
    "shows what the text explains."
)


@dataclass(frozen=True)
class History:
    """Earlier turns of the dialogue, as the user and the assistant saw them, and how much of them a request leaves
    out to fit its model's window (``seir.operators.context``)."""

    turns: tuple[tuple[str, str], ...] = ()  # (question, answer) pairs
    images: tuple[tuple[bytes, ...], ...] = ()  # the pictures the user brought in each of those turns
    trim: Trim = field(default_factory=Trim)

    def shown(self, index: int) -> tuple[bytes, ...]:
        return self.images[index] if index < len(self.images) else ()

    def earlier(self) -> list[tuple[str, str, tuple[bytes, ...]]]:
        """Each earlier turn's question, answer and pictures: what the fitting policy trims."""
        return [(question, answer, self.shown(index)) for index, (question, answer) in enumerate(self.turns)]

    def fitted(self, trim: Trim) -> History:
        return replace(self, trim=trim)

    def pictures(self) -> list[bytes]:
        """The earlier turns' pictures still shown, in order."""
        return [data for turn in trimmed(self.earlier(), self.trim)[1] for data in turn.pictures]

    def as_messages(self, current: dict[str, Any]) -> list[dict[str, Any]]:
        """The earlier turns as chat messages, then ``current``; a marker for left-out turns opens the first user
        message (a message of its own would break the user/assistant alternation some templates insist on)."""
        marker, shown = trimmed(self.earlier(), self.trim)
        messages: list[dict[str, Any]] = []
        for turn in shown:
            messages += [_user(_with_note(turn.question, left_out_note(turn.pictures_left_out)), turn.pictures),
                         _text("assistant", turn.answer)]
        messages.append(current)
        return [_opened(messages[0], marker), *messages[1:]] if marker else messages

    def transcript(self) -> str:
        marker, shown = trimmed(self.earlier(), self.trim)
        lines = [marker] if marker else []
        for turn in shown:
            count = len(turn.pictures) + turn.pictures_left_out
            showing = f" (showing {count} picture{'s' * (count != 1)})" if count else ""
            left_out = f" {left_out_note(turn.pictures_left_out)}" if turn.pictures_left_out else ""
            lines.append(f"User{showing}:{left_out} {turn.question}\nAssistant: {turn.answer}")
        return "\n".join(lines) or "(no earlier turns)"


@dataclass(frozen=True)
class Revision:
    """A draft to improve and what the judge said about it."""

    draft: str
    critique: str = field(default="")


class UnusableOutput(ValueError):
    """A model reply that cannot serve as a draft; the message says why."""


def question_messages(opening: str, history: History, max_words: int, revision: Revision | None = None,
                      images: Sequence[bytes] = ()) -> list[dict]:
    """The user side's next question; ``images`` are the pictures the user brings in this turn. Pictures shown in
    earlier turns come first, so the question can build on them."""
    system = _text("system", _SYSTEM_USER_SIDE.format(words=max_words))
    earlier = history.pictures()
    if not history.turns:
        task = f"The person's request is:\n{opening}\nRewrite it as the first question of the conversation."
    else:
        task = (
            f"The conversation began with: {opening}\nSo far:\n{history.transcript()}\n"
            "Write the person's next question: it follows on from the answers and asks for a new picture."
        )
    if images:
        task += (" The person shows the last pictures above with this question: ask about what they show, and say "
                 "what picture to make from them (a variation, an edit, a new view, or something they inspire).")
    elif earlier:
        task += " The pictures above are those the person showed in earlier turns."
    return [system, _user(task + _revise(revision, "question"), [*earlier, *images])]


def answer_messages(question: str, history: History, revision: Revision | None = None,
                    images: Sequence[bytes] = (), briefs: Sequence[str] = ()) -> list[dict]:
    """``briefs``: what earlier stages of the turn hand the answer's writer (a stage's ``brief``), in the system
    message, so the user's own words stay the question."""
    task = question + _revise(revision, "answer")
    if images:
        task += "\n\nAnswer from what the pictures I showed really contain; do not invent what they do not show."
    system = "\n\n".join([_SYSTEM_ASSISTANT, *briefs])
    return [_text("system", system), *history.as_messages(_user(task, images))]


def caption_messages(question: str, answer: str, max_words: int, revision: Revision | None = None,
                     images: Sequence[bytes] = (), starts: Sequence[bytes] = ()) -> list[dict]:
    """``images``: every picture shown to the writer (earlier turns' first); ``starts``: those the user shows with
    this question, the last of ``images``, which the picture may start from (``start_from`` reads the choice)."""
    task = (
        f"Question: {question}\nAnswer: {answer}\n"
        f"Describe, in at most {max_words} words, the picture that should go with this answer. Show what the answer "
        "explains and add what words cannot: layout, colour, scale, setting. Do not repeat the answer."
    )
    if images:
        task += " The picture must relate to the pictures the person showed (above) as the question asks."
    if starts:
        task += " " + _START_FROM_TASK.format(count=len(starts))
    return [_text("system", _SYSTEM_ASSISTANT), _user(task + _revise(revision, "caption"), images)]


# The caption's last line names the picture to start from, among the ones the user shows with this question.
_START_FROM_TASK = (
    "Then, on a last line of its own, write 'Start from: picture N' when the picture should be made from picture N "
    "of the {count} the person shows with this question (1 is the first), as an edit or a variation of it, or "
    "'Start from: none' when it should be a new picture."
)
_START_FROM_LINE = re.compile(r"^[\s>*_#-]*(?:start(?:ing)?|edit(?:ed)?|made|make it)\s+from\b[\s*_]*[:：-]?(.*)$",
                              re.IGNORECASE | re.MULTILINE)
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1, "only": 1, "this": 1, "that": 1}
NEW_PICTURE = 0  # a writer's choice of no source: the picture is made new, from the caption alone


def start_from(reply: str, count: int) -> tuple[str, int | None]:
    """The caption without its 'Start from:' line, and the picture that line names: its number (1-based) among the
    ``count`` the user shows with the question, ``NEW_PICTURE`` for none, or None when the line is absent or names
    no picture there (the caller's default then decides). The last such line counts; what it says is read loosely
    ("picture 2", "#2", "the second photo", "none", "a new picture")."""
    found = list(_START_FROM_LINE.finditer(reply))
    if not found:
        return reply, None
    said = found[-1].group(1).strip().lower()
    caption = (reply[:found[-1].start()] + reply[found[-1].end():]).strip()
    if re.search(r"\b(?:none|new|nothing|scratch)\b", said):
        return caption, NEW_PICTURE
    number = re.search(r"\d+", said)
    if number:
        chosen = int(number.group())
    else:
        chosen = next((value for word, value in _ORDINALS.items() if re.search(rf"\b{word}\b", said)), 0)
        chosen = count if chosen == -1 else chosen
    return caption, chosen if 1 <= chosen <= count else None


def prompt_fingerprint() -> str:
    """xxh3_128 of every generation prompt rendered for a fixed probe, in each of its forms (first turn or later,
    first draft or revision). A comment or a refactor that renders the same prompts keeps it; a changed
    instruction changes it."""
    history, revision = History((("q0", "a0"),)), Revision("draft", "critique")
    shown = History((("q0", "a0"),), ((b"image",),))
    rendered = [
        [question_messages("opening", h, 50, r) for h in (History(), history) for r in (None, revision)],
        [answer_messages("question", h, r) for h in (History(), history) for r in (None, revision)],
        [caption_messages("question", "answer", 65, r) for r in (None, revision)],
        # with pictures the user brings, now or in an earlier turn
        [question_messages("opening", h, 50, None, i) for h in (History(), shown) for i in ([], [b"image"])],
        [answer_messages("question", h, None, [b"image"]) for h in (History(), shown)],
        caption_messages("question", "answer", 65, None, [b"image"]),
        caption_messages("question", "answer", 65, None, [b"shown0", b"image"], [b"image"]),
    ]
    return xxhash.xxh3_128_hexdigest(json.dumps(rendered, sort_keys=True, default=bytes.decode).encode())


def clean_reply(text: str, what: str) -> str:
    """A usable draft from a model reply: labels like "Question:" stripped, quotes and whitespace trimmed."""
    reply = re.sub(rf"^\s*(?:{what}|revised {what}|improved {what})\s*:\s*", "", text.strip(), flags=re.IGNORECASE)
    reply = reply.strip().strip('"').strip()
    if not reply:
        raise UnusableOutput(f"empty {what}")
    if not re.search(r"[^\W\d_]", reply):
        raise UnusableOutput(f"{what} has no letters: {reply[:60]!r}")
    return reply


def _revise(revision: Revision | None, what: str) -> str:
    if revision is None:
        return ""
    return (
        f"\n\nA reviewer read this {what}:\n{revision.draft}\nand said:\n{revision.critique}\n"
        f"Write an improved {what} that fixes every point. Reply with the {what} alone."
    )


def _text(role: str, text: str) -> dict[str, Any]:
    # Plain string content: the chat templates of many text-only models do not read content lists.
    return {"role": role, "content": text}


def _with_note(text: str, note: str) -> str:
    return f"{note}\n{text}" if note else text


def _opened(message: dict[str, Any], marker: str) -> dict[str, Any]:
    """``message`` with ``marker`` before everything it holds."""
    content = message["content"]
    if isinstance(content, str):
        return {**message, "content": _with_note(content, marker)}
    return {**message, "content": [{"type": "text", "text": marker + "\n"}, *content]}


def _user(text: str, images: Sequence[bytes]) -> dict[str, Any]:
    """A user message: plain text, or the pictures the user shows followed by the text."""
    if not images:
        return _text("user", text)
    return {"role": "user", "content": [*({"type": "image", "image": data} for data in images),
                                        {"type": "text", "text": text}]}
