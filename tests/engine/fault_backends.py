"""Backends that misbehave on purpose, to pin down error paths of the engine (named in jobs as 'module:Class')."""

from __future__ import annotations

from typing import ClassVar

from seir.operators.backends.base import ChatRequest, ChatResult
from seir.operators.backends.transformers_chat import TransformersChat


class EmptyWhenGreedy(TransformersChat):
    """The real tiny LLM, except that greedy requests get an empty reply: the engine must record those drafts as
    failed and retry them (it retries a failed draft with sampling)."""

    name: ClassVar[str] = "test-empty-when-greedy"

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        results = super().chat(requests)
        return [ChatResult("", r.tokens_in, 0, "stop") if q.sampling.temperature == 0 else r
                for q, r in zip(requests, results, strict=True)]
