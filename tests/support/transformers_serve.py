"""A real third-party OpenAI-compatible server for tests: Hugging Face's ``transformers serve`` (from PyPI, with the
``dev`` extra's fastapi, uvicorn and openai), started on a free 127.0.0.1 port, serving any local model folder by
its path on CPU, offline. What it supports (transformers 5.24): chat with images and ``seed``; ``/completions``; no
``logprobs`` or ``n`` (ignored), and it refuses ``continue_final_message`` (HTTP 422). So a judge there can only
score by sampling: the case issue 14 was filed for."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seir.operators.backends.engines import EngineServer, free_port

READY_TIMEOUT_S = 120.0


@contextmanager
def transformers_serve() -> Iterator[str]:
    """The server's base URL (ending in /v1) while the block runs; the server and anything it started are killed
    after, whatever happens (seir's own engine supervision: its process group, and a guard should this die)."""
    command = Path(sys.executable).with_name("transformers")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    server = EngineServer("transformers-serve", [str(command), "serve", "--host", "127.0.0.1", "--port", str(port),
                                                 "--device", "cpu", "--log-level", "error"],
                          f"http://127.0.0.1:{port}/health", env, READY_TIMEOUT_S)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.stop()
