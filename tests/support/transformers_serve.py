"""A real third-party OpenAI-compatible server for tests: Hugging Face's ``transformers serve`` (from PyPI, with the
``dev`` extra's fastapi, uvicorn and openai), started on a free 127.0.0.1 port, serving any local model folder by
its path on CPU, offline. What it supports (transformers 5.24): chat with images and ``seed``; ``/completions``; no
``logprobs`` or ``n`` (ignored), and it refuses ``continue_final_message`` (HTTP 422). So a judge there can only
score by sampling: the case issue 14 was filed for."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def transformers_serve() -> Iterator[str]:
    """The server's base URL (ending in /v1) while the block runs; the process is killed after, whatever happens."""
    command = Path(sys.executable).with_name("transformers")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen([str(command), "serve", "--host", "127.0.0.1", "--port", str(port), "--device",
                                   "cpu", "--log-level", "error"], stdout=log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
        try:
            _wait_ready(server, f"http://127.0.0.1:{port}/health", log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            os.killpg(server.pid, signal.SIGKILL)  # its own session: the server and anything it started
            server.wait(timeout=30)


def _wait_ready(server: subprocess.Popen[bytes], health: str, log: object) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)  # type: ignore[attr-defined]
            raise RuntimeError(f"transformers serve exited with {server.returncode}: "
                               f"{log.read().decode(errors='replace')[-2000:]}")  # type: ignore[attr-defined]
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"transformers serve did not answer {health} within {READY_TIMEOUT_S:g}s")
