"""Benchmark-only backends (named in a role as ``"bench.fixtures:FixedLatency"``); never a product path."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from seir.operators.backends.base import Backend, ChatRequest, ChatResult


class FixedLatency(Backend):
    """Sleeps ``latency_s`` per batch, whatever its size, and answers every request with "ok": a model whose
    throughput is known exactly, so what a pool loses against actors x batch / latency is the pool's own cost."""

    name: ClassVar[str] = "bench-fixed-latency"
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat"})

    def __init__(self, model: str, revision: str | None = None, *, latency_s: float = 0.05, **options: Any) -> None:
        # A fixed revision: there are no weights to fingerprint.
        super().__init__(model, revision or "fixed", latency_s=latency_s, **options)
        self.latency_s = latency_s

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        time.sleep(self.latency_s)
        return [ChatResult("ok", tokens_in=1, tokens_out=1, finish_reason="stop") for _ in requests]
