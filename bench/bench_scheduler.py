"""Issue 6 benchmark: how close a role's actor pool comes to the throughput its actors could give.

The model is ``bench.fixtures:FixedLatency``: every batch takes exactly ``latency`` seconds, so a pool of ``actors``
actors with batches of ``batch`` requests can at best serve ``actors * batch / latency`` requests/s (the ideal).
The pool is driven the way the SEIR loop drives it: several shards' calls in flight at once (``--call-chunks``
batches per call, enough calls to keep ``--per-actor`` batches per actor in flight), each awaiting ``pool.call``,
or the whole ``ModelClient.chat`` path (content key per request, cache lookup, ledger) with ``--path client``.
Printed per setting, medians of the repeats: requests/s, the ideal, their ratio (target >= 0.9), and the share of
actor time spent inside the backend (what is left is Ray's per-task cost and waiting on the driver).

Run it from the repository root: Ray workers import ``bench.fixtures`` from the driver's working directory.

    python bench/bench_scheduler.py --actors 1 2 4 8 --latency 0.05 0.2 --repeats 3 --path pool client
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import ray

from seir.engine.records import Ledger
from seir.engine.run import CallFailure, ModelClient, RolePool
from seir.engine.spec import RoleSpec
from seir.engine.store import ImageStore
from seir.operators.backends.base import ChatRequest


class NoCache:
    """A call cache that has answered nothing: every request goes to the pool."""

    def answered(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        return {}


def make_requests(count: int, start: int, images: list[bytes]) -> list[ChatRequest]:
    """``count`` distinct requests; the i-th carries ``images[i]`` if there are images."""
    return [ChatRequest([{"role": "user", "content": [*([{"type": "image", "image": images[i]}] if images else []),
                                                      {"type": "text", "text": f"request {start + i}"}]}])
            for i in range(count)]


Call = Callable[[list[ChatRequest]], Awaitable[tuple[list[Any], dict[str, float]]]]


async def drive(call: Call, calls: int, call_size: int, in_flight: int,
                images: list[bytes]) -> tuple[float, float]:
    """Push ``calls`` calls of ``call_size`` requests through ``call``, ``in_flight`` at a time: the seconds it took,
    and the seconds actors spent inside the backend (each batch once)."""
    gate = asyncio.Semaphore(in_flight)
    batches = [make_requests(call_size, i * call_size, images) for i in range(calls)]
    busy: dict[str, float] = {}

    async def one(requests: list[ChatRequest]) -> None:
        async with gate:
            results, latencies = await call(requests)
        busy.update(latencies)
        failed = [r for r in results if isinstance(r, CallFailure)]
        if failed:
            raise RuntimeError(f"{len(failed)} requests failed: {failed[0].reason}")

    started = time.perf_counter()
    await asyncio.gather(*(one(requests) for requests in batches))
    return time.perf_counter() - started, sum(busy.values())


async def measure(pool: RolePool, path: str, args: argparse.Namespace, actors: int) -> list[tuple[float, float]]:
    """(requests/s, share of actor time spent in the backend) of each repeat, after one warm-up run."""
    call_size = args.call_chunks * args.batch_size
    calls = actors * args.rounds // args.call_chunks  # a whole number of rounds for every actor
    in_flight = max(2, math.ceil(args.per_actor * actors / args.call_chunks))
    # Distinct within a call, so every request's image really travels (pickle sends a repeated object once).
    images = [os.urandom(args.image_kb * 1024) for _ in range(call_size)] if args.image_kb else []
    if path == "pool":
        async def call(requests: list[ChatRequest]) -> tuple[list[Any], dict[str, float]]:
            results, stats = await pool.call("chat", requests)
            return results, {s.batch_id: s.latency_s for s in stats}
    else:
        # Chat never touches the image store; the folder is only there to build the client.
        client = ModelClient("llm", pool, pool.ready(60), NoCache(), ImageStore(Path(tempfile.gettempdir())))

        async def call(requests: list[ChatRequest]) -> tuple[list[Any], dict[str, float]]:
            ledger = Ledger()
            results = await client.chat(requests, ledger)
            return results, {c.batch_id: c.latency_ms / 1000 for c in ledger.calls}

    await drive(call, max(1, calls // 4), call_size, in_flight, images)  # warm-up: workers, connections, caches
    runs = []
    for _ in range(args.repeats):
        seconds, busy = await drive(call, calls, call_size, in_flight, images)
        runs.append((calls * call_size / seconds, busy / (actors * seconds)))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--latency", type=float, nargs="+", default=[0.05, 0.2], help="seconds per batch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--call-chunks", type=int, default=4, help="batches per pool call (one shard's worth)")
    parser.add_argument("--per-actor", type=int, default=3, help="batches in flight per actor (sets calls in flight)")
    parser.add_argument("--rounds", type=int, default=40, help="batches per actor per repeat")
    parser.add_argument("--image-kb", type=int, default=0, help="attach an image of this size to every request")
    parser.add_argument("--path", nargs="+", choices=["pool", "client"], default=["pool"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--append", type=Path, help="append the table (markdown) and the command to this file")
    args = parser.parse_args()
    if args.rounds % args.call_chunks:
        parser.error("--rounds must be a multiple of --call-chunks")

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rows = []
    header = ("| path | latency ms | actors | requests/s | ideal requests/s | ratio | actors busy |\n"
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(header, flush=True)
    loads = [os.getloadavg()[0]]
    for latency in args.latency:
        for actors in args.actors:
            spec = RoleSpec(backend="bench.fixtures:FixedLatency", model="fixed", options={"latency_s": latency},
                            replicas=actors, batch_size=args.batch_size, num_cpus=0.1, timeout_s=60)
            pool = RolePool("llm", spec)
            pool.ready(120)
            try:
                for path in args.path:
                    runs = asyncio.run(measure(pool, path, args, actors))
                    rate = statistics.median(r for r, _ in runs)
                    ideal = actors * args.batch_size / latency
                    rows.append(f"| {path} | {latency * 1000:.0f} | {actors} | {rate:.0f} | {ideal:.0f} | "
                                f"{rate / ideal:.3f} | {statistics.median(b for _, b in runs):.3f} |")
                    print(rows[-1], flush=True)
                    loads.append(os.getloadavg()[0])
            finally:
                pool.shutdown()
    ray.shutdown()
    # Other work on the machine steals the actors' CPU; the load average says how much there was.
    note = f"1-minute load average during the run: {min(loads):.1f} to {max(loads):.1f}"
    print(note)
    if args.append:
        command = " ".join(["python", *sys.argv])
        machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, CPU only"
        with args.append.open("a") as out:
            out.write(f"\nCommand: `{command}`  \nMachine: {machine}; median of {args.repeats} repeats after a "
                      f"warm-up; batch {args.batch_size}, {args.image_kb} KB image per request; {note}.\n\n"
                      + header + "\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
