"""What the judge scores, and the conversations that ask it to.

A ``Dimension`` is one thing a turn (or a whole dialogue) is judged on: a rubric, what each score level means, and
the inputs it cannot be judged without. The judge first writes a critique covering the dimensions of a stage
(critique first, then score, as in MM-RLHF), then each score is read as the expectation over the probabilities of
the score tokens that follow a line like "Text content score (0-5): " (so it never fails to parse).

Dimension facts follow SynJudge (four turn dimensions, 0-5) and InterMT (nine helpfulness dimensions, 0-3); the
rubric and anchor wording is ours.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import xxhash

from seir.operators.backends.base import ScoreRequest
from seir.operators.context import Trim, left_out_note, trimmed
from seir.operators.limits import INTERSYN_LIMITS, WordLimits

INPUTS = frozenset({"question", "answer", "image", "caption", "dialogue"})


@dataclass(frozen=True)
class Dimension:
    name: str
    title: str
    scale: tuple[int, int]
    needs: frozenset[str]  # inputs it cannot be judged without; "dialogue" marks a dialogue-level dimension
    rubric: str  # may name the job's word limits as {question_words} and {caption_words}
    anchors: dict[int, str] = field(hash=False)

    def __post_init__(self) -> None:
        if not self.needs <= INPUTS:
            raise ValueError(f"{self.name}: unknown inputs {sorted(self.needs - INPUTS)}; known: {sorted(INPUTS)}")
        if sorted(self.anchors) != list(range(self.scale[0], self.scale[1] + 1)):
            raise ValueError(f"{self.name}: anchors must name every level of {self.scale}")

    def rubric_for(self, limits: WordLimits) -> str:
        """The rubric as a judge reads it, with the job's word limits filled in."""
        return self.rubric.format(question_words=limits.question, caption_words=limits.caption)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(str(level) for level in range(self.scale[0], self.scale[1] + 1))

    @property
    def per_dialogue(self) -> bool:
        return "dialogue" in self.needs

    def to_0_5(self, value: float) -> float:
        """A value on this dimension's scale, mapped linearly onto 0-5."""
        low, high = self.scale
        return 5.0 * (value - low) / (high - low)


def _dim(name: str, title: str, top: int, needs: set[str], rubric: str, *anchors: str) -> Dimension:
    return Dimension(name, title, (0, top), frozenset(needs), rubric, dict(enumerate(anchors)))


SYNJUDGE: dict[str, Dimension] = {
    d.name: d
    for d in (
        _dim("text_content", "Text content", 5, {"question", "answer"},
             "Does the answer respond to the question completely and correctly? Facts, numbers and steps must be "
             "right, every part of the question must be addressed, and the writing must be clear and free of "
             "padding or repetition. When the user showed pictures, the answer must be faithful to them: it "
             "describes what they really show and invents or contradicts nothing in them.",
             "There is no answer, or it ignores the question.",
             "Mostly wrong or off-topic; little of it could be used.",
             "On topic but with a major error or a large part of the question left unanswered.",
             "Relevant and mostly correct; misses a notable point or contains a minor error.",
             "Correct and nearly complete; only small omissions or awkward wording.",
             "Fully correct, complete and clearly written; nothing to add or remove."),
        _dim("image_content", "Image content", 5, {"question", "image"},
             "Does the picture show what the question asked to see and what its caption promises? Look for the "
             "right subjects, actions, setting, counts and details, and for anything that contradicts them. When "
             "the user showed pictures, the new picture must relate to them as asked (a variation, an edit, a new "
             "view of the same subject): it keeps what should be kept and changes what the question asked to change.",
             "There is no picture, or it shows something unrelated.",
             "Touches the topic but the main subject asked for is absent or wrong.",
             "The main subject is present but key requested details are missing or wrong.",
             "Shows what was asked with some details missing or slightly off.",
             "Shows what was asked; one small detail is missing or imprecise.",
             "Shows exactly what was asked, every requested detail present and correct."),
        _dim("image_quality", "Image quality", 5, {"image"},
             "How good is the picture as a picture, regardless of the text? Judge sharpness, exposure, colour, "
             "noise and compression artefacts, plausible structure (hands, faces, lettering, geometry) and "
             "composition.",
             "There is no picture, or it is unreadable (blank, corrupt, pure noise).",
             "Severe defects: heavy blur, broken anatomy or structure, large artefacts.",
             "Clearly flawed: visible distortions or artefacts that distract from the content.",
             "Acceptable: minor artefacts or a dull composition, content still easy to read.",
             "Good: clean and well composed, with at most a subtle flaw.",
             "Excellent: sharp, natural, well lit and composed, no visible flaw."),
        _dim("image_text_synergy", "Image-text synergy", 5, {"answer", "image"},
             "Do the text and the picture work together? The picture should illustrate or extend what the answer "
             "says, the caption should describe the picture and add something the answer does not already state, "
             "and nothing in one may contradict the other.",
             "There is no picture or no text, or they contradict each other.",
             "They share a topic but the picture adds nothing the answer needs.",
             "The picture loosely supports the answer; the caption mostly restates the answer.",
             "The picture supports the answer and the caption adds a little of its own.",
             "Picture, caption and answer complement each other with small gaps.",
             "Each part adds something the others lack and together they explain more than either alone."),
    )
}

QUESTION: Dimension = _dim(
    "question", "Question", 5, {"question"},
    "Is this a good next question from the user? It should read like something a person would ask, be specific "
    "enough to answer well, naturally call for a picture in the reply, stay within {question_words} words, and "
    "build on the conversation so far instead of repeating or ignoring it. When the user shows pictures, the question "
    "is about what they show.",
    "There is no question, or it is not a question about anything.",
    "Unnatural or incoherent, or unrelated to the conversation.",
    "Understandable but vague, far too long, or with no reason to show a picture.",
    "A fair question with one clear weakness (vague, wordy, weak link to earlier turns, no visual need).",
    "A natural, specific question that fits the conversation; a small improvement is possible.",
    "Natural, specific, concise, invites an illustrative picture and follows on from the earlier turns.",
)

INTERMT_TURN: dict[str, Dimension] = {
    d.name: d
    for d in (
        _dim("local_image_text_consistency", "Image-text consistency", 3, {"answer", "image"},
             "Does this turn's picture match this turn's text? It should depict the specific things, steps or "
             "methods the answer describes, not merely its general topic, and must not contradict them.",
             "No picture, or it is unrelated to or contradicts the text.",
             "Related to the general topic only; depicts nothing the answer specifically says.",
             "Matches the topic and some specifics, but key points of the answer are not shown.",
             "Faithfully depicts the specific content of the answer."),
        _dim("visual_perceptual_quality", "Visual quality", 3, {"image"},
             "How good does the picture look? Consider structure, composition, naturalness, sharpness and any "
             "artefacts or distortions.",
             "No picture, or it is badly broken or unreadable.",
             "Noticeable distortions or artefacts spoil it.",
             "Reasonable, with minor flaws.",
             "Well structured, natural and clean."),
        _dim("text_quality", "Text quality", 3, {"answer"},
             "Is the answer's text clear, fluent, accurate and well organised, without errors, contradictions or "
             "filler?",
             "No text, or it is unreadable or wrong throughout.",
             "Hard to follow or contains significant errors.",
             "Clear and mostly accurate, with small lapses in clarity or structure.",
             "Clear, accurate, fluent and well organised."),
        _dim("context_coherence", "Context coherence", 3, {"question", "answer"},
             "Does this turn follow logically from the conversation so far? It should answer the current question "
             "in the light of earlier turns and the pictures shown in them, and keep facts consistent with them, "
             "without repeating or contradicting them.",
             "Ignores or contradicts the question or the earlier turns.",
             "Weakly connected; repeats earlier content or loses the thread.",
             "Follows on sensibly with a minor gap or repetition.",
             "Follows on naturally and consistently from everything before it."),
    )
}

INTERMT_DIALOGUE: dict[str, Dimension] = {
    d.name: d
    for d in (
        _dim("context_awareness", "Context awareness", 3, {"dialogue"},
             "Across the whole dialogue, do the replies remember and use what was said and shown earlier (the "
             "user's situation, earlier answers, earlier pictures) instead of treating each turn as new?",
             "Each reply ignores what came before.",
             "Earlier context is used rarely or inconsistently.",
             "Earlier context is mostly used, with occasional lapses.",
             "Every reply builds on the relevant earlier context."),
        _dim("helpfulness", "Helpfulness", 3, {"dialogue"},
             "How much does the dialogue as a whole help the user reach their goal with accurate, relevant and "
             "actionable content?",
             "Not helpful, or misleading.",
             "Slightly helpful; much is vague, wrong or irrelevant.",
             "Helpful overall, with gaps or padding.",
             "Very helpful: accurate, relevant and actionable throughout."),
        _dim("crucial_step_recognition", "Crucial steps", 3, {"dialogue"},
             "Does the dialogue identify the steps that matter for the user's task and cover them clearly, in a "
             "sensible order, without skipping a key one?",
             "The key steps are missing.",
             "Some key steps appear but important ones are missing or muddled.",
             "The key steps are covered, some without enough clarity or in an odd order.",
             "Every key step is covered clearly and in a sensible order."),
        _dim("global_image_text_consistency", "Global image-text consistency", 3, {"dialogue", "image"},
             "Across all turns, does each picture agree with its text, and do the pictures together follow how the "
             "conversation develops?",
             "Pictures are missing or mostly unrelated to the text.",
             "Many pictures match their text only loosely.",
             "Most pictures match their text; a few are generic or off.",
             "Every picture matches its text and the sequence follows the conversation."),
        _dim("style_coherence", "Style coherence", 3, {"dialogue", "image"},
             "Do the pictures keep one consistent visual style across the dialogue (medium, palette, rendering, "
             "recurring characters and objects), matching the tone of the text?",
             "Pictures are missing or clash in style from turn to turn.",
             "Styles shift noticeably between turns.",
             "Mostly consistent, with an occasional mismatch.",
             "One coherent style throughout."),
    )
}

RUBRICS: dict[str, dict[str, Dimension]] = {
    "synjudge": SYNJUDGE,
    "question": {QUESTION.name: QUESTION},
    "seir": {QUESTION.name: QUESTION, **SYNJUDGE},  # what the SEIR loop gates on
    "intermt": {**INTERMT_TURN, **INTERMT_DIALOGUE},
}
DIMENSIONS: dict[str, Dimension] = {d.name: d for rubric in RUBRICS.values() for d in rubric.values()}


@dataclass
class TurnView:
    """What the judge sees of one turn."""

    question: str
    answer: str | None = None
    caption: str | None = None
    image: bytes | None = None  # encoded PNG/JPEG: the picture the assistant made
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier (question, answer) pairs
    shown: list[bytes] = field(default_factory=list)  # the pictures the user brings with this question
    history_shown: list[list[bytes]] = field(default_factory=list)  # the pictures the user brought in earlier turns
    trim: Trim = field(default_factory=Trim)  # how much of the history a request leaves out to fit the window
    source: bytes | None = None  # the user's picture ``image`` was edited from; None when made from text

    def shown_in(self, index: int) -> list[bytes]:
        """The pictures the user brought in earlier turn ``index``."""
        return self.history_shown[index] if index < len(self.history_shown) else []

    def earlier(self) -> list[tuple[str, str, list[bytes]]]:
        """Each earlier turn's question, answer and pictures: what the fitting policy trims."""
        return [(question, answer, self.shown_in(index)) for index, (question, answer) in enumerate(self.history)]


@dataclass
class DialogueView:
    """What the judge sees of a whole dialogue, for dialogue-level dimensions. Each turn's history is ignored."""

    turns: list[TurnView]
    trim: Trim = field(default_factory=Trim)  # applied to every turn but the last

    def earlier(self) -> list[tuple[str, str, list[bytes]]]:
        """Every turn but the last, with all its pictures (the user's and the one made): what fitting trims."""
        return [(turn.question, turn.answer or "", [*turn.shown, *([turn.image] if turn.image else [])])
                for turn in self.turns[:-1]]


View = TurnView | DialogueView


def present_inputs(view: View) -> frozenset[str]:
    turns = view.turns if isinstance(view, DialogueView) else [view]
    present = {"dialogue"} if isinstance(view, DialogueView) and view.turns else set()
    for turn in turns:
        present.update(name for name in ("question", "answer", "caption") if (getattr(turn, name) or "").strip())
        if turn.image:
            present.add("image")
    return frozenset(present)


def missing_input_score(dimension: Dimension, turn: View) -> float | None:
    """0.0 when the view lacks an input the dimension needs (SynJudge: missing text or image scores 0), else None."""
    return 0.0 if dimension.needs - present_inputs(turn) else None


def critique_messages(dimensions: Sequence[Dimension], turn: View,
                      limits: WordLimits = INTERSYN_LIMITS) -> list[dict[str, Any]]:
    """One user message asking for a short critique of ``turn`` on ``dimensions``, naming concrete fixes and ending
    with "none" alone when nothing needs fixing; for an image stage it also asks for a better caption. ``limits``: the
    job's word limits, which the rubrics and the suggested caption are held to."""
    dimensions = list(dimensions)
    if not dimensions:
        raise ValueError("critique_messages needs at least one dimension")
    dialogue = isinstance(turn, DialogueView)
    wrong = [d.name for d in dimensions if d.per_dialogue != dialogue]
    if wrong:
        kind = "turn" if dialogue else "dialogue"
        raise ValueError(f"{', '.join(wrong)} are {kind}-level dimensions; pass a {kind.title()}View for them")
    subject = "dialogue" if dialogue else "turn"
    intro = (f"You review one {subject} of a conversation in which an assistant answers a user with text and a "
             f"picture. Judge it on these dimensions:\n\n" + "\n\n".join(_describe(d, limits) for d in dimensions))
    parts = [_text(intro + "\n\n")]
    parts += _render_dialogue(turn) if dialogue else _render_turn(turn)
    parts.append(_text(_task(dimensions, turn, subject, limits)))
    return [{"role": "user", "content": _merged(parts)}]


def score_request(dimension: Dimension, turn: View, critique: str, dimensions: Sequence[Dimension] | None = None,
                  limits: WordLimits = INTERSYN_LIMITS) -> ScoreRequest:
    """The critique conversation with the critique as the start of the judge's answer, then a score line whose
    next token is read over ``dimension.labels``. ``dimensions`` are those the critique covered (default: just
    this one); passing them keeps the prompt identical to the critique call, so a server's prefix cache serves it."""
    covered = list(dimensions or [dimension])
    if dimension not in covered:
        covered.append(dimension)
    low, high = dimension.scale
    line = f"{dimension.title} score ({low}-{high}): "
    critique = critique.strip()
    return ScoreRequest(messages=critique_messages(covered, turn, limits),
                        answer_prefix=f"{critique}\n\n{line}" if critique else line, labels=dimension.labels)


COMPARISON_LABELS = ("A", "B", "tie")


def comparison_request(dimensions: Sequence[Dimension], first: TurnView, second: TurnView,
                       candidate_fields: Sequence[str], limits: WordLimits = INTERSYN_LIMITS) -> ScoreRequest:
    """Which of two candidates for the same turn is better on ``dimensions``, read over "A", "B" and "tie".
    ``candidate_fields`` are the fields the candidates wrote (``TurnView``'s names); the rest of the turn is the
    context both share, shown once from ``first``. The caller asks both orders, so position bias cancels."""
    unknown = set(candidate_fields) - {"question", "answer", "caption", "image"}
    if unknown or not candidate_fields:
        raise ValueError(f"candidate fields {sorted(unknown) or '(none)'}: name the TurnView fields a stage writes")
    names = [d.title.lower() for d in dimensions]
    intro = ("You compare two candidates for the same turn of a conversation in which an assistant answers a user "
             "with text and a picture. Judge them on these dimensions:\n\n"
             + "\n\n".join(_describe(d, limits) for d in dimensions) + "\n\n")
    parts = [_text(intro), *_render_history(first, "The turn:"), *_render_shown(first.shown)]
    if "question" not in candidate_fields:
        parts.append(_text(f"User: {first.question or '(no question)'}\n"))
    if "answer" not in candidate_fields and first.answer is not None:
        parts.append(_text(f"Assistant: {first.answer or '(empty answer)'}\n"))
    for label, view in zip(COMPARISON_LABELS, (first, second), strict=False):
        parts.append(_text(f"\nCandidate {label}:\n"))
        if "question" in candidate_fields:
            parts.append(_text(f"User: {view.question or '(no question)'}\n"))
        if "answer" in candidate_fields:
            parts.append(_text(f"Assistant: {view.answer or '(empty answer)'}\n"))
        if "image" in candidate_fields:
            parts += _render_picture(view)
        elif "caption" in candidate_fields:
            parts.append(_text(f"Caption: {view.caption or '(none)'}\n"))
    parts.append(_text(f"\nWhich candidate is better overall on {', '.join(names)}? Answer A or B, or tie when "
                       "neither is better."))
    return ScoreRequest(messages=[{"role": "user", "content": _merged(parts)}], answer_prefix="Better candidate: ",
                        labels=COMPARISON_LABELS)


def prompt_fingerprint(dimensions: Sequence[Dimension], limits: WordLimits = INTERSYN_LIMITS) -> str:
    """xxh3_128 of the score prompts rendered for a fixed probe under ``limits``: it changes whenever a rubric, a
    template or a word limit the rubrics state does, so it belongs in the content key of every score."""
    probe = _probe()
    return _fingerprint([score_request(d, DialogueView([probe]) if d.per_dialogue else probe, "critique", None, limits)
                         for d in dimensions])


def comparison_fingerprint(limits: WordLimits = INTERSYN_LIMITS) -> str:
    """xxh3_128 of the comparison prompt rendered for a fixed probe: a key of every dialogue judged pairwise."""
    return _fingerprint([comparison_request([QUESTION], _probe(), _probe(), ["question"], limits)])


def _probe() -> TurnView:
    return TurnView("q", "a", "c", b"image", [("q0", "a0")], [b"shown"], [[b"shown0"]])


def _fingerprint(requests: Sequence[ScoreRequest]) -> str:
    rendered = [[request.messages, request.answer_prefix, request.labels] for request in requests]
    return xxhash.xxh3_128_hexdigest(json.dumps(rendered, default=bytes.decode, sort_keys=True).encode())


_MARKUP = " \t*_`#>\"'“”‘’"


def _bare(line: str) -> str:
    return line.strip(_MARKUP).rstrip(".!;:").strip(_MARKUP).lower()


def critique_finds_nothing(critique: str) -> bool:
    """The critic ended with "none" alone (or "Fixes: none"), and proposed no better caption. An empty critique is
    a failed critic, not an all-clear."""
    lines = [line for line in critique.splitlines() if line.strip()]
    if not lines:
        return False
    last = _bare(lines[-1])
    return bool(re.fullmatch(r"(?:[a-z ]{1,30}:\s*)?none", last)) and suggested_caption(critique) is None


_CAPTION_LINE = re.compile(r"^[\s>*_#-]*better caption[\s*_]*[:：]", re.IGNORECASE | re.MULTILINE)


def suggested_caption(critique: str) -> str | None:
    """The caption after the last "Better caption:" marker, up to the next blank line; None when absent or "none"."""
    found = list(_CAPTION_LINE.finditer(critique))
    if not found:
        return None
    paragraph = re.split(r"\n\s*\n", critique[found[-1].end():].strip(), maxsplit=1)[0]
    caption = " ".join(paragraph.split()).strip(_MARKUP)
    return None if not caption or _bare(caption) == "none" else caption


def _describe(dimension: Dimension, limits: WordLimits) -> str:
    low, high = dimension.scale
    anchors = "\n".join(f"  {level}: {meaning}" for level, meaning in sorted(dimension.anchors.items()))
    return f"{dimension.title} ({low}-{high}): {dimension.rubric_for(limits)}\n{anchors}"


def _task(dimensions: Sequence[Dimension], turn: View, subject: str, limits: WordLimits) -> str:
    titles = [d.title.lower() for d in dimensions]
    names = titles[0] if len(titles) == 1 else f"{', '.join(titles[:-1])} and {titles[-1]}"
    task = (f"\nWrite a short critique of this {subject} (at most 120 words) covering {names}. Point out each "
            "concrete problem and say exactly how to fix it. Do not give scores yet; they are asked for after the "
            "critique. If nothing needs fixing, end with a line holding only the word none.")
    if any("image" in d.needs for d in dimensions) and "image" in present_inputs(turn):
        task += (f" If the picture should be made again, end instead with a line starting 'Better caption:' "
                 f"followed by a caption of at most {limits.caption} words describing the picture it should be.")
    return task


def _render_history(turn: TurnView, then: str) -> list[dict[str, Any]]:
    if not turn.history:
        return []
    marker, shown = trimmed(turn.earlier(), turn.trim)
    parts = [_text("Earlier in the conversation:\n" + (f"{marker}\n" if marker else ""))]
    for earlier in shown:
        parts += [*_render_shown(earlier.pictures, earlier.pictures_left_out),
                  _text(f"User: {earlier.question}\nAssistant: {earlier.answer}\n")]
    return [*parts, _text(f"\n{then}\n")]


def _render_turn(turn: TurnView) -> list[dict[str, Any]]:
    parts = _render_history(turn, "The turn to review:")
    parts += _render_shown(turn.shown)
    parts.append(_text(f"User: {turn.question or '(no question)'}\n"))
    if turn.answer is not None:
        parts.append(_text(f"Assistant: {turn.answer or '(empty answer)'}\n"))
    return parts + _render_picture(turn)


def _render_dialogue(dialogue: DialogueView) -> list[dict[str, Any]]:
    marker, shown = trimmed(dialogue.earlier(), dialogue.trim)
    parts = [_text(f"{marker}\n")] if marker else []
    last = len(dialogue.turns)
    kept = [(turn.number, turn.answer, bool(turn.pictures_left_out)) for turn in shown]
    for number, answer, left_out in [*kept, (last, dialogue.turns[-1].answer, False)] if dialogue.turns else []:
        turn = dialogue.turns[number - 1]
        parts.append(_text(f"Turn {number}\n"))
        parts += _render_shown([], len(turn.shown)) if left_out else _render_shown(turn.shown)
        parts.append(_text(f"User: {turn.question}\nAssistant: {answer or '(empty answer)'}\n"))
        parts += _render_picture(turn, left_out)
    return parts


def _render_shown(images: Sequence[bytes], left_out: int = 0) -> list[dict[str, Any]]:
    """The pictures the user brings with a question, before it, as the writer saw them."""
    if left_out:
        return [_text(f"The user shows {left_out_note(left_out)}\n")]
    if not images:
        return []
    count = f"{len(images)} picture{'s' * (len(images) != 1)}"
    return [_text(f"The user shows {count}:"), *({"type": "image", "image": data} for data in images), _text("\n")]


def _render_picture(turn: TurnView, left_out: bool = False) -> list[dict[str, Any]]:
    parts = [_text(f"Caption: {turn.caption}\n")] if turn.caption else []
    if turn.image and left_out:
        return [*parts, _text(f"Picture: {left_out_note(1)}\n")]
    if turn.image and turn.source:  # an edit: the judge compares what it started from with what it made
        return [*parts, _text("Picture, edited from this picture the user showed:"),
                {"type": "image", "image": turn.source}, _text("\nThe edited result:"),
                {"type": "image", "image": turn.image}, _text("\n")]
    if turn.image:
        return [*parts, _text("Picture:"), {"type": "image", "image": turn.image}, _text("\n")]
    return [*parts, _text("Picture: (none)\n")]


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _merged(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent text parts joined, so templates see text, image, text rather than many fragments."""
    merged: list[dict[str, Any]] = []
    for part in parts:
        if merged and part["type"] == "text" and merged[-1]["type"] == "text":
            merged[-1] = _text(merged[-1]["text"] + part["text"])
        else:
            merged.append(part)
    return merged
