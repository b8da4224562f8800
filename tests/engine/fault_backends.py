"""Backends that misbehave on purpose, to pin down error paths of the engine (named in jobs as 'module:Class')."""

from __future__ import annotations

from typing import ClassVar

from seir.operators.backends.base import Backend, ChatRequest, ChatResult
from seir.operators.backends.transformers_chat import TransformersChat


class EmptyWhenGreedy(TransformersChat):
    """The real tiny LLM, except that greedy requests get an empty reply: the engine must record those drafts as
    failed and retry them (it retries a failed draft with sampling)."""

    name: ClassVar[str] = "test-empty-when-greedy"

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        results = super().chat(requests)
        return [ChatResult("", r.tokens_in, 0, "stop") if q.sampling.temperature == 0 else r
                for q, r in zip(requests, results, strict=True)]


class SameReply(Backend):
    """No model: every request gets one fixed reply, so dialogues from different seeds come out with the same text,
    which the dedup pass at the end of a run must catch."""

    name: ClassVar[str] = "test-same-reply"
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat"})
    reply: ClassVar[str] = "A red fox sleeps under the old stone bridge while snow falls on the quiet river."

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        return [ChatResult(self.reply, 10, 16, "stop") for _ in requests]
