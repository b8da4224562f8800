"""Ray actor pools, one per model role.

Each actor hosts one backend (loaded once with ``from_pretrained``) and serves whole batches. A pool splits a batch
into chunks of the role's ``batch_size`` and hands each chunk to the least-loaded actor, so every actor stays busy
while several shards are in flight. Actors that die are restarted by Ray and their in-flight calls retried
(``max_restarts``/``max_task_retries``); a call that still fails comes back as a ``CallFailure`` with the reason,
which the SEIR loop records as a failed draft rather than crashing. A call that runs past ``timeout_s`` is cancelled
and its actor restarted; the pool sends that actor nothing new until it is back, and stops using an actor that is
dead for good.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from seir.engine.errors import SeirError
from seir.engine.logs import redirect_worker_output
from seir.engine.spec import RoleSpec
from seir.operators.backends.base import CallFailure, LocalBackend, ProbeReport
from seir.operators.context import Window
from seir.operators.registry import lookup


@dataclass
class ChunkStats:
    size: int
    latency_s: float  # wall time of the backend call inside the actor
    batch_id: str


class RoleActor:
    """Hosts one backend. Kept free of engine state so Ray can restart it anywhere."""

    def __init__(self, role: str, backend: str, model: str, revision: str | None, options: dict[str, Any],
                 num_threads: int, log_path: str | None = None) -> None:
        redirect_worker_output(log_path)  # before the model loads: its bars and warnings are the noise
        backend_class = lookup("backend", backend)
        if issubclass(backend_class, LocalBackend):  # others (endpoints) never load torch: seconds and memory saved
            import torch

            # Ray sets OMP threads to num_cpus (0 for fractional CPUs means "all"); pin torch to what the role asked.
            torch.set_num_threads(num_threads)
        self.role = role
        self.load_error: Exception | None = None
        try:
            self.backend = backend_class(model=model, revision=revision, **options)
        except Exception as err:  # raised again by start(): Ray then hands the driver the exception itself, whole
            self.load_error = err

    def config(self) -> dict[str, Any]:
        return self.backend.config()

    def start(self, needs: frozenset[str]) -> tuple[dict[str, Any], ProbeReport | None, Window]:
        """Probe the model server (if any) for what the job needs of this role, then the config, which holds what
        the probe chose, and the model's context window with its token counter (shipped to where requests are
        built, so they are fitted before they are keyed)."""
        if self.load_error is not None:
            raise self.load_error
        report = self.backend.probe(needs)
        limit, counter = self.backend.context()
        source = "server" if report is not None else "model config"
        return self.backend.config(), report, Window(self.role, limit, counter, source) if counter else None

    def call(self, method: str, requests: list[Any]) -> tuple[list[Any], float]:
        started = time.perf_counter()
        results = getattr(self.backend, method)(requests)
        if len(results) != len(requests):
            raise RuntimeError(f"{self.role} {method} returned {len(results)} results for {len(requests)} requests")
        return results, time.perf_counter() - started


@dataclass
class _Lane:
    """One actor and the chunks sent to it that have not come back yet."""

    actor: Any
    sent: list[asyncio.Future[None]] = field(default_factory=list)  # each chunk's done signal, in send order
    restarting: asyncio.Task[None] | None = None
    dead: bool = False


class RolePool:
    def __init__(self, role: str, spec: RoleSpec, log_path: str | None = None) -> None:
        self.role = role
        self.spec = spec
        backend = lookup("backend", spec.backend)
        backend_options, num_gpus = backend.placement(dict(spec.options), spec.num_gpus)
        # An engine that batches continuously is given enough chunks at once to keep in_flight requests running.
        self.concurrency = max(spec.max_concurrency, -(-backend.in_flight(backend_options) // spec.batch_size))
        options: dict[str, Any] = {
            "num_cpus": spec.num_cpus,
            "num_gpus": num_gpus,
            "resources": dict(spec.resources),
            "max_restarts": 3,
            "max_task_retries": spec.max_retries,
            "max_concurrency": self.concurrency,
        }
        if spec.memory_gb:
            options["memory"] = int(spec.memory_gb * 1024**3)
        if spec.label_selector:
            options["label_selector"] = dict(spec.label_selector)
        threads = max(1, int(spec.num_cpus))
        actor_class = ray.remote(RoleActor).options(**options)
        self.actors = [
            actor_class.remote(role, spec.backend, spec.model, spec.revision, backend_options, threads, log_path)
            for _ in range(spec.replicas)
        ]
        self._lanes = [_Lane(actor) for actor in self.actors]
        # Two chunks per execution slot: while one runs, the next already waits at the actor, which starts it the
        # moment the first ends instead of idling for a round-trip to the driver (bench/bench_scheduler.py).
        self._depth = 2 * self.concurrency
        # Plain futures made by the running loop when needed, so a pool works under any event loop, one after another.
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._batches = 0
        self.report: ProbeReport | None = None  # what the model server said it can do (endpoint backends)
        self.window: Window | None = None  # None: the role takes no chat requests

    def ready(self, timeout_s: float, needs: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Wait for every actor to load its model and probe its server for ``needs``; returns the backend's config
        (model, revision, options) and keeps the first actor's probe report in ``report`` and its context window in
        ``window``, where the role's own ``context_length`` wins."""
        try:
            started = ray.get([actor.start.remote(needs) for actor in self.actors], timeout=timeout_s)
        except (RayTaskError, RayActorError) as err:  # the backend's own message says what to change
            raise SeirError(f"role {self.role} ({self.spec.backend}, model {self.spec.model}) could not start, so "
                            f"nothing was run: {_startup_error(err)}") from None
        except GetTimeoutError:
            raise SeirError(f"role {self.role} ({self.spec.backend}, model {self.spec.model}) did not start within "
                            f"{timeout_s:g}s, so nothing was run: raise roles.{self.role}.timeout_s if its model is "
                            "just slow to load, or check that the cluster has the resources the role asks for "
                            "(`ray status`)") from None
        config, self.report, self.window = started[0]
        if self.window is not None and self.spec.context_length is not None:
            self.window.limit, self.window.source = self.spec.context_length, "job"
        return config

    async def call(self, method: str, requests: list[Any]) -> tuple[list[Any], list[ChunkStats]]:
        """Run ``requests`` through the pool; results keep the order of the requests."""
        size = self.spec.batch_size
        chunks = [requests[i : i + size] for i in range(0, len(requests), size)]
        outcomes = await asyncio.gather(*(self._call_chunk(method, chunk) for chunk in chunks))
        results = [result for chunk_results, _ in outcomes for result in chunk_results]
        return results, [stats for _, stats in outcomes]

    async def _call_chunk(self, method: str, chunk: list[Any]) -> tuple[list[Any], ChunkStats]:
        self._batches += 1
        batch_id = f"{self.role}-{self._batches}"
        taken = await self._acquire()
        if taken is None:
            reason = f"{self.role} {method} failed: every {self.role} actor died past its restarts (see the Ray logs)"
            return [CallFailure(reason)] * len(chunk), ChunkStats(len(chunk), 0.0, batch_id)
        lane, done, ahead = taken
        try:  # from the send on: a request Ray cannot serialize fails its chunk too, and frees the place
            ref = lane.actor.call.remote(method, chunk)
            await self._turn(lane, ahead)
            results, latency = await asyncio.wait_for(ref, timeout=self.spec.timeout_s)
        except asyncio.TimeoutError:
            # Cancelled first: Ray would run the hung chunk again on the restarted actor. The chunk's drafts fail
            # and are retried next round.
            ray.cancel(ref)
            ray.kill(lane.actor, no_restart=False)
            self._watch_restart(lane)
            reason = (f"{self.role} {method} timed out after {self.spec.timeout_s:g}s "
                      f"(raise roles.{self.role}.timeout_s if the model is just slow)")
            return [CallFailure(reason)] * len(chunk), ChunkStats(len(chunk), self.spec.timeout_s, batch_id)
        except Exception as err:  # the backend raised, or the actor died past its retries: fail the drafts, go on
            if isinstance(err, RayActorError):
                self._watch_restart(lane)
            reason = f"{self.role} {method} failed: {_describe(err)}"
            cause = _cause(err)
            failure = CallFailure(reason, stops_run=bool(getattr(cause, "stops_run", False)),
                                  request_only=bool(getattr(cause, "request_only", False)))
            return [failure] * len(chunk), ChunkStats(len(chunk), 0.0, batch_id)
        finally:
            lane.sent.remove(done)
            done.set_result(None)
            self._wake()
        return results, ChunkStats(len(chunk), latency, batch_id)

    async def _acquire(self) -> tuple[_Lane, asyncio.Future[None], list[asyncio.Future[None]]] | None:
        """A place for one chunk on the least-loaded live actor: its lane, the chunk's done signal and the signals
        of the chunks sent there before it. None once every actor is dead."""
        while True:
            live = [lane for lane in self._lanes if not lane.dead]
            if not live:
                return None
            open_lanes = [lane for lane in live if lane.restarting is None and len(lane.sent) < self._depth]
            if open_lanes:
                lane = min(open_lanes, key=lambda lane: len(lane.sent))
                ahead = list(lane.sent)
                done = asyncio.get_running_loop().create_future()
                lane.sent.append(done)
                return lane, done, ahead
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # woken, then cancelled: pass the wake-up on
                    self._wake()
                raise

    def _wake(self, everyone: bool = False) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return

    async def _turn(self, lane: _Lane, ahead: list[asyncio.Future[None]]) -> None:
        """Return once the actor has started this chunk (enough chunks ahead of it are done, and the actor is not
        restarting), so that the chunk's timeout counts its own run, not its wait in the actor's queue."""
        pending = [signal for signal in ahead if not signal.done()]
        while len(pending) >= self.concurrency:
            _, still = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending = list(still)
        if lane.restarting is not None:
            await asyncio.shield(lane.restarting)

    def _watch_restart(self, lane: _Lane) -> None:
        if lane.restarting is None:
            lane.restarting = asyncio.get_running_loop().create_task(self._restarted(lane))

    async def _restarted(self, lane: _Lane) -> None:
        """Hold ``lane`` back until Ray has restarted its actor (the model reloads); retire it if dead for good."""
        try:
            await asyncio.wait_for(lane.actor.config.remote(), timeout=max(self.spec.timeout_s, 600))
        except (RayActorError, asyncio.TimeoutError):
            lane.dead = True
        finally:
            lane.restarting = None
            self._wake(everyone=True)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


def _cause(err: BaseException) -> BaseException:
    """The backend's own exception when it raised (Ray wraps it in the actor's traceback), else Ray's."""
    return err.cause if isinstance(err, RayTaskError) and err.cause is not None else err


def _startup_error(err: RayTaskError | RayActorError) -> str:
    """What the backend raised while loading or probing, whole; else why Ray lost the actor."""
    cause = _cause(err)
    if cause is not err:
        return f"{type(cause).__name__}: {cause}"
    lines = str(err).strip().splitlines()
    return lines[-1] if lines else type(err).__name__


def _describe(err: BaseException) -> str:
    """One line: the backend's own exception when it raised (Ray wraps it in the actor's traceback), else Ray's."""
    err = _cause(err)
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[-1][:300] if lines else ''}"
