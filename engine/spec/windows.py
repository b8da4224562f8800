"""What a job's requests ask of each role's context window, told before anything runs (``seir validate``).

The window comes from the role's ``context_length``, else the model's config (read from its files, no weights
loaded); a server's is known only once it is probed at the start of a run. The sizes are the real prompts, counted
with the role's own tokenizer: each of the job's stages builds its requests and judge views for the last turn of the
longest dialogue, filled with stand-in text of the longest lengths the job allows (``question_words`` and
``caption_words``, each cut at the writer's ``max_new_tokens``), and the longest of them is reported per role.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from seir.engine.spec.job import JobSpec
from seir.operators.backends.base import Backend, CallFailure, RenderRequest
from seir.operators.context import TokenCounter, Trim
from seir.operators.registry import lookup
from seir.operators.scoring.judge import SCORE_LINE_TOKENS
from seir.operators.scoring.rubrics import DIMENSIONS, View, critique_messages
from seir.operators.stages import JUDGE, TEXT_WRITER, VISION_WRITER, Draft, Prompt, TurnContext
from seir.operators.stages.prompts import History


def window_report(spec: JobSpec) -> list[str]:
    """One line per chat role: its window and the sizes of its longest requests, with a warning where a request's
    fixed parts cannot fit (its drafts would fail) and a note where earlier turns will be left out."""
    lines = []
    measured: dict[str, tuple[list[Prompt], list[View]]] | None = None
    for role, role_spec in spec.roles.items():
        backend: type[Backend] = lookup("backend", role_spec.backend)  # type: ignore[assignment]
        if "chat" not in backend.capabilities:
            continue
        try:
            declared, counter = backend.offline_context(role_spec.model, role_spec.revision, role_spec.options)
        except (OSError, ValueError, ImportError) as err:
            # A hub id not downloaded here (its window is read when it loads), or a processor part whose library
            # is missing: said in a line, never a traceback.
            set_here = f"{role_spec.context_length:,} tokens (job)" if role_spec.context_length else None
            why = ("its config and tokenizer are not on this machine" if isinstance(err, OSError)
                   else f"it could not be read: {str(err).strip().splitlines()[0]}")
            lines.append(f"{role}: context window {set_here or 'read when the model loads'} ({why}, so the "
                         "requests were not measured)")
            continue
        limit = role_spec.context_length or declared
        source = "job" if role_spec.context_length else "model config"
        if limit is None or counter is None:
            known = f"{limit:,} tokens ({source})" if limit else "told by the server when the run starts"
            lines.append(f"{role}: context window {known}")
            continue
        measured = measured or _last_turns(spec)
        if role in (TEXT_WRITER, VISION_WRITER):
            what, fixed, whole = _writer_sizes(spec, role, counter, measured)
        elif role == JUDGE:
            what, fixed, whole = _judge_sizes(spec, counter, measured)
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


class _Recorder:
    """A ``Writer`` that sends nothing: it keeps each request a stage builds and answers with stand-in text as long
    as the job lets the writer make it (its word limit for questions and captions, cut at max_new_tokens)."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.prompts: list[Prompt] = []
        blank = _blank_picture(spec.seir.image_width, spec.seir.image_height)
        self.picture = _Picture("0" * 32, blank, "")

    def reply(self, purpose: str) -> str:
        limit = {"question": self.spec.seir.question_words, "caption": self.spec.seir.caption_words}.get(purpose)
        tokens = self.spec.roles[TEXT_WRITER].sampling.max_new_tokens
        return _words(min(limit or tokens, tokens))

    async def chat(self, purpose: str, turns: Any, drafts: Any, previous: Any, prompts: Any) -> list[str]:
        self.prompts += prompts
        return [self.reply(purpose)] * len(prompts)

    async def render(self, drafts: Any, requests: list[RenderRequest]) -> list[_Picture | CallFailure]:
        return [self.picture] * len(requests)

    def sampling_seed(self, turn: Any, draft: Any, purpose: str) -> int:
        return 0


@dataclass
class _Picture:
    key: str
    png: bytes
    call_key: str


def _last_turns(spec: JobSpec) -> dict[str, tuple[list[Prompt], list[View]]]:
    """Every stage's requests and judge views in the last turn of the longest dialogue the job makes, with and
    without the earlier turns (stand-in text of the longest lengths allowed): by history ("whole", "fixed"), the
    writers' requests and the judge's views."""
    recorder = _Recorder(spec)
    question, answer = recorder.reply("question"), recorder.reply("answer")
    found = {}
    for name, history in (("fixed", History()), ("whole", History(((question, answer),) * (spec.seir.turns - 1)))):
        recorder.prompts = []
        turn = TurnContext(opening=question, seed_key="", history=history)
        views: list[View] = []
        stages = spec.seir.stage_units()
        for stage in stages:
            draft = Draft("", "", spec.seir.turns - 1, stage.name, 0, None)
            asyncio.run(stage.write([turn], [draft], [None], recorder))  # type: ignore[arg-type]
            views.append(stage.view(turn, draft))
            turn.kept[stage.name] = draft
            turn.briefs += [b for b in [stage.brief(draft)] if b]
        found[name] = (recorder.prompts, views)
    return found


def stage_prompts(spec: JobSpec, names: Collection[str]) -> list[Any]:
    """The requests the job's stages named in ``names`` build on a fixed probe (a later turn, a first draft and a
    revision of it), as rendered: keyed into a job's dialogues, so that a stage of one's own that changes what it
    asks changes the keys of what it made, as seir's own prompt fingerprint does for the built-in stages."""
    recorder = _Recorder(spec)
    turn = TurnContext(opening="opening", seed_key="", history=History((("q0", "a0"),)))
    rendered: list[Any] = []
    for stage in spec.seir.stage_units():
        recorder.prompts = []
        first = Draft("", "", 1, stage.name, 0, None)
        asyncio.run(stage.write([turn], [first], [None], recorder))  # type: ignore[arg-type]
        first.critique = "critique"
        asyncio.run(stage.write([turn], [Draft("", "", 1, stage.name, 1, None)], [first], recorder))  # type: ignore[arg-type]
        if stage.name in names:
            rendered += [prompt.build(Trim()) for prompt in recorder.prompts]
        turn.kept[stage.name] = first
        turn.briefs += [b for b in [stage.brief(first)] if b]
    return rendered


def _writer_sizes(spec: JobSpec, role: str, counter: TokenCounter,
                  measured: dict[str, tuple[list[Prompt], list[View]]]) -> tuple[str, int, int]:
    reply = spec.roles[role].sampling.max_new_tokens
    fixed, whole = (max(counter.count(p.build(Trim())) for p in measured[k][0]) + reply for k in ("fixed", "whole"))
    return "longest writer request", fixed, whole


def _judge_sizes(spec: JobSpec, counter: TokenCounter,
                 measured: dict[str, tuple[list[Prompt], list[View]]]) -> tuple[str, int, int]:
    reply = spec.roles[JUDGE].sampling.max_new_tokens + SCORE_LINE_TOKENS
    sizes = []
    for key in ("fixed", "whole"):
        counts = [counter.count(critique_messages(dimensions, view))
                  for stage, view in zip(spec.seir.stage_units(), measured[key][1], strict=True)
                  if (dimensions := [DIMENSIONS[d] for d in stage.dimensions if d in spec.scoring.weights])]
        sizes.append(max(counts, default=-reply) + reply)
    return "longest critique", sizes[0], sizes[1]


def _blank_picture(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, format="PNG")
    return out.getvalue()
