"""Fitting a request into its model's context window: one policy for the requests of every role.

A request is built from fixed parts (the instruction or rubric, the current turn, the pictures the user shows in it)
and the dialogue's earlier turns. The fixed parts are never cut. When the whole request and the room for its reply
(``max_new_tokens``) do not fit the window, the earlier turns give way, each step cutting more than the last:

1. earlier turns' pictures, oldest turn first (the text says a picture was shown but is left out);
2. earlier turns' text, oldest first, replaced by one visible marker ("[turns 1-12 omitted]");
3. the middle of the last earlier reply still shown, halved until it fits;
4. that turn too.

The first step that fits is the request sent, keyed, recorded and replayed: the same inputs give the same request.
When even the last step does not fit, ``DoesNotFit`` says which request, how big, and whose window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

MIN_REPLY_WORDS = 8  # below this a cut reply says nothing; the turn goes whole instead


@dataclass(frozen=True)
class Trim:
    """How much of the earlier turns a request leaves out (each count from the oldest turn)."""

    pictures: int = 0  # earlier turns whose pictures are left out
    turns: int = 0  # earlier turns left out entirely, shown as a marker
    reply_words: int | None = None  # the oldest turn still shown has its reply cut to this many words


@dataclass(frozen=True)
class EarlierTurn:
    """An earlier turn as a request shows it after trimming."""

    number: int  # 1-based, in the whole dialogue
    question: str
    answer: str
    pictures: tuple[bytes, ...]  # the pictures still shown
    pictures_left_out: int


def trimmed(turns: Sequence[tuple[str, str, Sequence[bytes]]], trim: Trim) -> tuple[str, list[EarlierTurn]]:
    """The marker for the turns left out ("" when none) and the earlier turns still shown, as ``trim`` says."""
    shown = []
    for index, (question, answer, pictures) in enumerate(turns):
        if index < trim.turns:
            continue
        if index == trim.turns and trim.reply_words is not None:
            answer = cut_middle(answer, trim.reply_words)
        hidden = index < trim.pictures
        shown.append(EarlierTurn(index + 1, question, answer, () if hidden else tuple(pictures),
                                 len(pictures) if hidden else 0))
    return omitted_marker(min(trim.turns, len(turns))), shown


def omitted_marker(count: int) -> str:
    if count == 0:
        return ""
    return "[turn 1 omitted]" if count == 1 else f"[turns 1-{count} omitted]"


def left_out_note(count: int) -> str:
    """What a request says where it leaves out pictures the user showed."""
    return f"[{count} picture{'s' * (count != 1)} shown here, left out]" if count else ""


def cut_middle(text: str, words: int) -> str:
    """``text`` with its middle words replaced by a short marker (it must cost fewer tokens than it saves), keeping
    the first ``words - words // 2`` and the last ``words // 2``."""
    parts = text.split()
    if len(parts) <= words:
        return text
    head, tail = words - words // 2, words // 2
    return " ".join([*parts[:head], "[...]", *parts[len(parts) - tail:]])


def trims(turns: Sequence[tuple[str, str, Sequence[bytes]]]) -> list[Trim]:
    """Every step of the policy for these earlier turns, from cutting nothing to leaving them all out."""
    steps = [Trim()]
    steps += [Trim(pictures=index + 1) for index, (_, _, pictures) in enumerate(turns) if pictures]
    everything = len(turns)
    steps += [Trim(everything, left_out) for left_out in range(1, everything)]
    if turns:
        words = len(turns[-1][1].split()) // 2
        while words >= MIN_REPLY_WORDS:
            steps.append(Trim(everything, everything - 1, words))
            words //= 2
        steps.append(Trim(everything, everything))
    return steps


class TokenCounter(Protocol):
    def count(self, messages: list[dict[str, Any]], suffix: str = "") -> int:
        """Tokens of ``messages`` rendered as the model reads them (with the generation prompt), then ``suffix``."""
        ...


class DoesNotFit(ValueError):
    """A request whose fixed parts and reply alone overflow the window; the message names role, window and size."""

    def __init__(self, what: str, tokens: int, reply: int, role: str, limit: int) -> None:
        super().__init__(f"{what} request of {tokens:,} tokens with {reply:,} to write does not fit {role}'s "
                         f"{limit:,}")


# Finds a ``DoesNotFit`` message in a failure reason; its group is the role (for the run summary's count).
DOES_NOT_FIT_ROLE = r"to write does not fit (\S+)'s [0-9,]+"


@dataclass(frozen=True)
class Fitted:
    messages: list[dict[str, Any]]
    tokens: int  # of the request as sent, not counting the reply
    trim: Trim


@dataclass
class Window:
    """A role's context window and how to count its tokens. ``limit`` None: unknown, requests go as built."""

    role: str
    limit: int | None
    counter: TokenCounter
    source: str  # where the limit came from: "job", "model config", "server"

    def describe(self) -> str:
        return f"{self.limit:,} tokens ({self.source})" if self.limit else "unknown (requests are not fitted)"

    def fit(self, build: Callable[[Trim], list[dict[str, Any]]], turns: Sequence[tuple[str, str, Sequence[bytes]]],
            reply: int, what: str, suffix: str = "") -> Fitted:
        """The least-trimmed request built from ``build`` that leaves ``reply`` tokens to write; ``turns`` are the
        earlier turns the request shows. Sizes shrink step by step, so the first step that fits is found by
        bisection (the whole request is tried first: it is what nearly every request sends)."""
        if self.limit is None:
            return Fitted(build(Trim()), 0, Trim())
        steps = trims(turns)
        built: dict[int, Fitted] = {}

        def at(index: int) -> Fitted:
            if index not in built:
                messages = build(steps[index])
                built[index] = Fitted(messages, self.counter.count(messages, suffix), steps[index])
            return built[index]

        if at(0).tokens + reply <= self.limit:
            return at(0)
        last = len(steps) - 1
        if at(last).tokens + reply > self.limit:
            raise DoesNotFit(what, at(last).tokens, reply, self.role, self.limit)
        low, high = 0, last  # at(low) does not fit, at(high) does
        while high - low > 1:
            middle = (low + high) // 2
            if at(middle).tokens + reply <= self.limit:
                high = middle
            else:
                low = middle
        return at(high)
