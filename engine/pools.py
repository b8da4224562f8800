"""Ray actor pools, one per model role.

Each actor hosts one backend (loaded once with ``from_pretrained``) and serves whole batches. A pool splits a batch
into chunks of the role's ``batch_size`` and hands each chunk to the next free actor slot, so every actor stays
busy while several shards are in flight. Actors that die are restarted by Ray and their in-flight calls retried
(``max_restarts``/``max_task_retries``); a call that still fails comes back as a ``CallFailure`` with the reason,
which the SEIR loop records as a failed draft rather than crashing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import ray

from seir.engine.spec import RoleSpec
from seir.operators.base import lookup


@dataclass
class CallFailure:
    reason: str
    call_key: str = ""


@dataclass
class ChunkStats:
    size: int
    latency_s: float  # wall time of the backend call inside the actor
    batch_id: str


class RoleActor:
    """Hosts one backend. Kept free of engine state so Ray can restart it anywhere."""

    def __init__(self, role: str, backend: str, model: str, revision: str | None, options: dict[str, Any],
                 num_threads: int) -> None:
        import torch

        # Ray sets OMP threads to num_cpus (0 for fractional CPUs means "all"); pin torch to what the role asked.
        torch.set_num_threads(num_threads)
        self.role = role
        self.backend = lookup("backend", backend)(model=model, revision=revision, **options)

    def config(self) -> dict[str, Any]:
        return self.backend.config()

    def call(self, method: str, requests: list[Any]) -> tuple[list[Any], float]:
        started = time.perf_counter()
        results = getattr(self.backend, method)(requests)
        if len(results) != len(requests):
            raise RuntimeError(f"{self.role} {method} returned {len(results)} results for {len(requests)} requests")
        return results, time.perf_counter() - started


class RolePool:
    def __init__(self, role: str, spec: RoleSpec) -> None:
        self.role = role
        self.spec = spec
        options: dict[str, Any] = {
            "num_cpus": spec.num_cpus,
            "num_gpus": spec.num_gpus,
            "resources": dict(spec.resources),
            "max_restarts": 3,
            "max_task_retries": spec.max_retries,
            "max_concurrency": spec.max_concurrency,
        }
        if spec.memory_gb:
            options["memory"] = int(spec.memory_gb * 1024**3)
        threads = max(1, int(spec.num_cpus))
        actor_class = ray.remote(RoleActor).options(**options)
        self.actors = [
            actor_class.remote(role, spec.backend, spec.model, spec.revision, spec.options, threads)
            for _ in range(spec.replicas)
        ]
        self._slots: asyncio.Queue[Any] | None = None
        self._batches = 0

    def ready(self, timeout_s: float) -> dict[str, Any]:
        """Wait for every actor to load its model; returns the backend's config (model, revision, options)."""
        configs = ray.get([actor.config.remote() for actor in self.actors], timeout=timeout_s)
        return configs[0]

    def _free_slots(self) -> asyncio.Queue[Any]:
        # Built lazily so the queue belongs to the running event loop.
        if self._slots is None:
            self._slots = asyncio.Queue()
            for _ in range(self.spec.max_concurrency):
                for actor in self.actors:
                    self._slots.put_nowait(actor)
        return self._slots

    async def call(self, method: str, requests: list[Any]) -> tuple[list[Any], list[ChunkStats]]:
        """Run ``requests`` through the pool; results keep the order of the requests."""
        size = self.spec.batch_size
        chunks = [requests[i : i + size] for i in range(0, len(requests), size)]
        outcomes = await asyncio.gather(*(self._call_chunk(method, chunk) for chunk in chunks))
        results = [result for chunk_results, _ in outcomes for result in chunk_results]
        return results, [stats for _, stats in outcomes]

    async def _call_chunk(self, method: str, chunk: list[Any]) -> tuple[list[Any], ChunkStats]:
        slots = self._free_slots()
        actor = await slots.get()
        self._batches += 1
        batch_id = f"{self.role}-{self._batches}"
        ref = actor.call.remote(method, chunk)
        try:
            results, latency = await asyncio.wait_for(ref, timeout=self.spec.timeout_s)
        except asyncio.TimeoutError:
            # A hung actor is restarted (Ray re-creates it); the chunk's drafts fail and are retried next round.
            ray.kill(actor, no_restart=False)
            reason = (f"{self.role} {method} timed out after {self.spec.timeout_s:.0f}s "
                      f"(raise roles.{self.role}.timeout_s if the model is just slow)")
            return [CallFailure(reason)] * len(chunk), ChunkStats(len(chunk), self.spec.timeout_s, batch_id)
        except Exception as err:  # the backend raised, or the actor died past its retries: fail the drafts, go on
            reason = f"{self.role} {method} failed: {type(err).__name__}: {_first_line(err)}"
            return [CallFailure(reason)] * len(chunk), ChunkStats(len(chunk), 0.0, batch_id)
        finally:
            slots.put_nowait(actor)
        return results, ChunkStats(len(chunk), latency, batch_id)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[-1][:300] if text else ""
