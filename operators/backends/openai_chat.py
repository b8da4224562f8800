"""Chat and scores from an OpenAI-compatible server (vLLM, SGLang, OpenAI): the ``openai-chat`` backend.

Chat posts ``/chat/completions`` with the request's temperature, top_p, max_tokens and seed; image parts travel as
``data:`` URLs in ``image_url`` parts. A score is read as the local backends read it (see ``ScoreRequest``): the
expectation over the label tokens of the next-token distribution after the judge's partial answer.

- ``score_mode: logprobs`` (default): the conversation plus the partial assistant message (``answer_prefix``), sent
  with ``continue_final_message: true, add_generation_prompt: false`` (vLLM and SGLang extensions) for one token
  with ``top_logprobs``. Each listed token whose text, stripped of whitespace, is a label adds its probability to that
  label (so "5" and " 5" both count, whatever the server's tokenizer merges); unlisted labels get 0. ``label_mass``
  is the labels' summed probability. Servers list at most their top ``top_logprobs`` tokens (OpenAI and vLLM's
  default ``--max-logprobs`` allow 20), so an off-format model can leave every label unlisted: the probabilities are
  then uniform and ``label_mass`` is 0, which the judge reads as off-format.
- ``score_mode: sampled``, the fallback, also taken for each reply that came without logprobs: ``score_samples``
  one-token continuations at temperature 1 (one request with ``n``, fixed seed), each read as the label it starts
  with. The probabilities are the labels' shares of the readable samples, ``label_mass`` the readable share of all
  samples. Coarser (steps of 1/n) and noisier than logprobs, but needs nothing beyond ``continue_final_message``.
  A server that ignores ``n`` gives one sample. Set it for servers without logprobs, to skip the wasted first request.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from seir.operators.backends.base import ChatRequest, ChatResult, Sampling, ScoreRequest, ScoreResult
from seir.operators.backends.openai_http import EndpointError, OpenAIBackend
from seir.operators.base import register

CHAT_PATH = "/chat/completions"
SCORE_MODES = ("logprobs", "sampled")


def wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """seir's messages in the OpenAI wire format: image bytes become base64 ``data:`` URLs."""
    return [m if isinstance(m.get("content"), str) else {**m, "content": [_wire_part(p) for p in m["content"]]}
            for m in messages]


def _wire_part(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") != "image":
        return part
    data: bytes = part["image"]
    mime = "image/jpeg" if data.startswith(b"\xff\xd8") else "image/png"  # the contract allows PNG or JPEG bytes
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}}


def label_distribution(labels: tuple[str, ...], mass: list[float], tokens_in: int) -> ScoreResult:
    """Per-label probability mass (from logprobs or sample shares) renormalised; the total says how on-format the
    model was. With no mass on any label the probabilities are uniform, so the expectation is the scale's middle."""
    total = sum(mass)
    probabilities = [m / total for m in mass] if total > 0 else [1 / len(labels)] * len(labels)
    expectation = sum(p * float(label) for p, label in zip(probabilities, labels, strict=True))
    return ScoreResult(probabilities, expectation, min(total, 1.0), tokens_in)


@register
class OpenAIChat(OpenAIBackend):
    name = "openai-chat"
    capabilities = frozenset({"chat", "score", "vision"})  # image parts travel as data: URLs; the server decides

    def __init__(self, model: str, revision: str | None = None, *, score_mode: str = "logprobs",
                 top_logprobs: int = 20, score_samples: int = 5, **options: Any) -> None:
        if score_mode not in SCORE_MODES:
            raise ValueError(f"backend 'openai-chat': score_mode must be one of {SCORE_MODES}, not {score_mode!r}")
        if top_logprobs < 1 or score_samples < 1:
            raise ValueError("backend 'openai-chat': top_logprobs and score_samples must be at least 1")
        super().__init__(model, revision, **options)
        self.score_mode, self.top_logprobs, self.score_samples = score_mode, top_logprobs, score_samples
        self.options.update(score_mode=score_mode, top_logprobs=top_logprobs, score_samples=score_samples)

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        bodies = [self._body(r.messages, r.sampling) for r in requests]
        return [_chat_result(reply) for reply in self.endpoint.post_all(CHAT_PATH, bodies)]

    def _body(self, messages: list[dict[str, Any]], sampling: Sampling, **extra: Any) -> dict[str, Any]:
        return {"model": self.model_id, "messages": wire_messages(messages), "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed, **extra}

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        results: list[ScoreResult | None] = [None] * len(requests)
        if self.score_mode == "logprobs":
            replies = self.endpoint.post_all(CHAT_PATH, [
                self._continuation(r, logprobs=True, top_logprobs=self.top_logprobs) for r in requests])
            results = [_read_logprobs(r.labels, reply) for r, reply in zip(requests, replies, strict=True)]
        todo = [i for i, result in enumerate(results) if result is None]
        replies = self.endpoint.post_all(CHAT_PATH, [self._continuation(requests[i], n=self.score_samples)
                                                     for i in todo])
        for i, reply in zip(todo, replies, strict=True):
            results[i] = _read_samples(requests[i].labels, reply)
        return [result for result in results if result is not None]

    def _continuation(self, request: ScoreRequest, **extra: Any) -> dict[str, Any]:
        """One token after the judge's partial answer, left open rather than closed by the chat template.
        Temperature 1: servers that apply temperature before reporting logprobs then report the model's own."""
        messages = [*request.messages, {"role": "assistant", "content": request.answer_prefix}]
        return self._body(messages, Sampling(max_new_tokens=1, temperature=1.0), continue_final_message=True,
                          add_generation_prompt=False, **extra)


def _choices(reply: dict[str, Any]) -> list[dict[str, Any]]:
    choices = reply.get("choices")
    if not choices:
        raise EndpointError(f"the server's reply has no choices: {str(reply)[:200]}")
    return choices


def _prompt_tokens(reply: dict[str, Any]) -> int:
    return int((reply.get("usage") or {}).get("prompt_tokens", 0))


def _chat_result(reply: dict[str, Any]) -> ChatResult:
    choice = _choices(reply)[0]
    usage = reply.get("usage") or {}
    return ChatResult(text=(choice.get("message") or {}).get("content") or "", tokens_in=_prompt_tokens(reply),
                      tokens_out=int(usage.get("completion_tokens", 0)),
                      finish_reason="length" if choice.get("finish_reason") == "length" else "stop")


def _read_logprobs(labels: tuple[str, ...], reply: dict[str, Any]) -> ScoreResult | None:
    """None when the server sent no top logprobs (it ignores the parameter): the caller samples instead."""
    content = (_choices(reply)[0].get("logprobs") or {}).get("content") or [{}]
    listed = content[0].get("top_logprobs")
    if not listed:
        return None
    mass = [0.0] * len(labels)
    for entry in listed:
        token = entry["token"].strip()
        if token in labels:
            mass[labels.index(token)] += math.exp(entry["logprob"])
    return label_distribution(labels, mass, _prompt_tokens(reply))


def _read_samples(labels: tuple[str, ...], reply: dict[str, Any]) -> ScoreResult:
    texts = [((c.get("message") or {}).get("content") or "").strip() for c in _choices(reply)]
    mass = [0.0] * len(labels)
    for text in texts:
        starts = [label for label in labels if text.startswith(label)]
        if starts:
            mass[labels.index(max(starts, key=len))] += 1 / len(texts)  # the longest: "10" is not read as "1"
    return label_distribution(labels, mass, _prompt_tokens(reply))
