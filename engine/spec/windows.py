"""What a job's requests ask of each role's context window, told before anything runs (``seir validate``).

The window comes from the role's ``context_length``, else the model's config (read from its files, no weights
loaded); a server's is known only once it is probed at the start of a run. The sizes are the real prompts, counted
with the role's own tokenizer, filled with stand-in text of the longest lengths the job allows (``question_words``
and ``caption_words``, each cut at the writer's ``max_new_tokens``): the last turn's answer request for the writer,
an image stage's critique for the judge.
"""

from __future__ import annotations

import io

from seir.engine.records import STAGE_DIMENSIONS, Stage
from seir.engine.spec.job import JobSpec
from seir.operators.backends.base import Backend
from seir.operators.context import TokenCounter
from seir.operators.registry import lookup
from seir.operators.scoring.judge import SCORE_LINE_TOKENS
from seir.operators.scoring.rubrics import DIMENSIONS, TurnView, critique_messages
from seir.operators.seir.prompts import History, answer_messages

WRITERS = ("llm", "vlm")


def window_report(spec: JobSpec) -> list[str]:
    """One line per chat role: its window and the sizes of its longest requests, with a warning where a request's
    fixed parts cannot fit (its drafts would fail) and a note where earlier turns will be left out."""
    lines = []
    for role, role_spec in spec.roles.items():
        backend: type[Backend] = lookup("backend", role_spec.backend)  # type: ignore[assignment]
        if "chat" not in backend.capabilities:
            continue
        try:
            declared, counter = backend.offline_context(role_spec.model, role_spec.revision)
        except (OSError, ValueError):  # a hub id not downloaded here: its window is read when it loads
            set_here = f"{role_spec.context_length:,} tokens (job)" if role_spec.context_length else None
            lines.append(f"{role}: context window {set_here or 'read when the model loads'} (its config and "
                         "tokenizer are not on this machine, so the requests were not measured)")
            continue
        limit = role_spec.context_length or declared
        source = "job" if role_spec.context_length else "model config"
        if limit is None or counter is None:
            known = f"{limit:,} tokens ({source})" if limit else "told by the server when the run starts"
            lines.append(f"{role}: context window {known}")
            continue
        if role in WRITERS:
            what, fixed, whole = "answer request", *_writer_sizes(spec, role, counter)
        elif role == "judge":
            what, fixed, whole = "critique", *_judge_sizes(spec, counter)
        else:
            lines.append(f"{role}: context window {limit:,} tokens ({source})")
            continue
        line = (f"{role}: context window {limit:,} tokens ({source}); the last turn's {what} needs about "
                f"{whole:,} with its history and replies, {fixed:,} without the history")
        if fixed > limit:
            line += (f"\n  WARNING: {role}'s {what}s will not fit even without history, so those drafts will fail: "
                     f"raise roles.{role}.context_length (if the model allows), or lower max_new_tokens, "
                     "question_words or the picture size")
        elif whole > limit:
            line += "; earlier turns will be left out to fit (the run counts how often)"
        lines.append(line)
    return lines


def _words(count: int) -> str:
    return " ".join(["picture"] * count)


def _reply(spec: JobSpec, words: int) -> str:
    """Stand-in text as long as the writer may make it: its word limit, cut at its max_new_tokens."""
    return _words(min(words, spec.roles["llm"].sampling.max_new_tokens))


def _history(spec: JobSpec) -> tuple[str, History]:
    question = _reply(spec, spec.seir.question_words)
    answer = _words(spec.roles["llm"].sampling.max_new_tokens)
    return question, History(((question, answer),) * (spec.seir.turns - 1))


def _writer_sizes(spec: JobSpec, role: str, counter: TokenCounter) -> tuple[int, int]:
    question, history = _history(spec)
    reply = spec.roles[role].sampling.max_new_tokens
    return (counter.count(answer_messages(question, History())) + reply,
            counter.count(answer_messages(question, history)) + reply)


def _judge_sizes(spec: JobSpec, counter: TokenCounter) -> tuple[int, int]:
    question, history = _history(spec)
    answer = _words(spec.roles["llm"].sampling.max_new_tokens)
    caption = _reply(spec, spec.seir.caption_words)
    dimensions = [DIMENSIONS[d] for d in STAGE_DIMENSIONS[Stage.IMAGE] if d in spec.scoring.weights]
    if not dimensions:
        return 0, 0
    image = _blank_picture(spec.seir.image_width, spec.seir.image_height)
    reply = spec.roles["judge"].sampling.max_new_tokens + SCORE_LINE_TOKENS
    alone = TurnView(question, answer, caption, image)
    with_history = TurnView(question, answer, caption, image, history=list(history.turns))
    return (counter.count(critique_messages(dimensions, alone)) + reply,
            counter.count(critique_messages(dimensions, with_history)) + reply)


def _blank_picture(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, format="PNG")
    return out.getvalue()
