"""The actor pool under faults, on real Ray: actors that die, backends that raise, calls that hang."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import ray

from seir.engine.run import CallFailure, RolePool
from seir.engine.run.pools import ChunkStats
from seir.engine.spec import RoleSpec
from seir.operators.backends.base import Backend, ChatRequest, ChatResult, text_of

pytestmark = pytest.mark.usefixtures("ray_local")


class Faulty(Backend):
    """Answers each request with its own text and the actor's process id, and misbehaves on purpose when a batch
    holds one of these texts: "crash" (the process exits, once: a marker file remembers), "boom" (raises), "hang"
    (sleeps a minute), "slow" (sleeps half a second)."""

    name: ClassVar[str] = "test-faulty"

    def __init__(self, model: str, revision: str | None = None, *, marker: str = "", load_s: float = 0.0,
                 **options: Any) -> None:
        super().__init__(model, revision or "test", marker=marker, load_s=load_s, **options)
        self.marker = Path(marker)
        time.sleep(load_s)  # a model that loads slowly: a restart then outlasts a short call timeout

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        texts = [text_of(request.messages[-1]) for request in requests]
        if "crash" in texts and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        if "boom" in texts:
            raise ValueError("cannot answer 'boom'")
        if "hang" in texts:
            time.sleep(60)
        if "slow" in texts:
            time.sleep(0.5)
        return [ChatResult(f"{text} {os.getpid()}", 1, 1, "stop") for text in texts]


def make_pool(replicas: int, **spec: Any) -> RolePool:
    pool = RolePool("llm", RoleSpec(backend=f"{__name__}:Faulty", model="faulty", replicas=replicas, batch_size=2,
                                    num_cpus=0.1, **spec))
    pool.ready(120)
    return pool


async def chat(pool: RolePool, texts: list[str]) -> tuple[list[Any], list[ChunkStats]]:
    return await pool.call("chat", [ChatRequest([{"role": "user", "content": text}]) for text in texts])


def answered(result: Any) -> tuple[str, int]:
    """The text a request was answered for, and the process id of the actor that answered it."""
    assert isinstance(result, ChatResult), result
    text, pid = result.text.rsplit(" ", 1)
    return text, int(pid)


@pytest.fixture(scope="module")
def three_actors(ray_local: None) -> Iterator[RolePool]:
    pool = make_pool(3)
    yield pool
    pool.shutdown()


def test_results_keep_request_order_across_chunks_and_actors(three_actors: RolePool) -> None:
    # The first chunk is slow, so later chunks come back before it.
    texts = ["slow", *(f"r{i}" for i in range(1, 11))]
    results, stats = asyncio.run(chat(three_actors, texts))
    assert [answered(r)[0] for r in results] == texts
    assert [s.size for s in stats] == [2, 2, 2, 2, 2, 1]
    assert len({answered(r)[1] for r in results}) == 3


def test_backend_error_fails_its_chunk_only(three_actors: RolePool) -> None:
    results, _ = asyncio.run(chat(three_actors, ["a", "b", "boom", "c", "d", "e"]))
    assert [answered(r)[0] for r in results[:2] + results[4:]] == ["a", "b", "d", "e"]
    for failure in results[2:4]:
        assert isinstance(failure, CallFailure)
        assert failure.reason == "llm chat failed: ValueError: cannot answer 'boom'"


def test_actor_that_dies_mid_call_is_restarted_and_its_chunks_retried(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    pool = make_pool(1, options={"marker": str(marker)})
    try:
        texts = ["a", "crash", "b", "c"]  # the second chunk waits at the actor when it dies
        results, _ = asyncio.run(chat(pool, texts))
    finally:
        pool.shutdown()
    assert [answered(r)[0] for r in results] == texts
    assert int(marker.read_text()) not in {answered(r)[1] for r in results}  # answered by the restarted actor


def test_call_past_timeout_fails_restarts_the_actor_and_the_pool_goes_on() -> None:
    pool = make_pool(1, timeout_s=2, options={"load_s": 3.0})

    async def scenario() -> tuple[int, list[Any], list[Any]]:
        first, _ = await chat(pool, ["warm"])
        # One chunk hangs; the next one waits behind it at the actor and runs on the restarted actor, its clock
        # started only once the actor is back (the reload alone outlasts the 2 s timeout).
        results, _ = await chat(pool, ["hang", "x", "y", "z"])
        after, _ = await chat(pool, ["after"])  # would wait behind a re-run of the hung chunk, and time out
        return answered(first[0])[1], results, after

    try:
        first_pid, results, after = asyncio.run(scenario())
    finally:
        pool.shutdown()
    for failure in results[:2]:
        assert isinstance(failure, CallFailure)
        assert failure.reason.startswith("llm chat timed out after 2s")
    assert [answered(r)[0] for r in results[2:]] == ["y", "z"]
    assert answered(results[2])[1] != first_pid
    assert answered(after[0])[0] == "after"


def kill_for_good(actor: Any) -> None:
    """ray.kill returns before the actor is gone; wait until calls to it really fail."""
    ray.kill(actor, no_restart=True)
    for _ in range(100):
        try:
            ray.get(actor.config.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.1)
    raise AssertionError("the killed actor kept answering")


def test_actor_dead_for_good_is_retired() -> None:
    pool = make_pool(2)

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        await asyncio.to_thread(kill_for_good, pool.actors[0])
        first, _ = await chat(pool, ["a", "b", "c", "d", "e", "f", "g", "h"])
        second, _ = await chat(pool, ["i", "j", "k", "l"])
        await asyncio.to_thread(kill_for_good, pool.actors[1])
        await chat(pool, ["m"])
        third, _ = await chat(pool, ["n"])
        return first, second, third

    try:
        first, second, third = asyncio.run(scenario())
    finally:
        pool.shutdown()
    failed = [r for r in first if isinstance(r, CallFailure)]
    assert failed and all("ActorDiedError" in f.reason for f in failed)
    assert [answered(r)[0] for r in second] == ["i", "j", "k", "l"]
    assert isinstance(third[0], CallFailure) and "every llm actor died" in third[0].reason
