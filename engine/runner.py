"""A run from start to finish: plan, start the model pools, run shards through the SEIR loop, commit each shard,
dedup, and write a dataset version.

Planning needs no Ray: every dialogue's key is known before any model loads, so a dialogue committed earlier (by
an interrupted run of the same job, or by an earlier job with the same generation config) is never recomputed.
An interrupted run is resumed by running the same command again: its plan is read back from the store.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import ray

import seir
from seir.engine.calls import ModelClient
from seir.engine.images import ImageStore
from seir.engine.keys import content_key
from seir.engine.lock import OutputLock
from seir.engine.loop import DialogueTask, SeirLoop
from seir.engine.output import write_version
from seir.engine.pools import RolePool
from seir.engine.progress import Progress, format_summary, run_summary
from seir.engine.records import Seed
from seir.engine.scoring import StageScorer
from seir.engine.seeds import SeedLoad, load_seeds
from seir.engine.spec import JobSpec
from seir.engine.store import ProvenanceStore
from seir.operators.backends.base import fingerprint_model
from seir.operators.backends.tiny import resolve_model_ref
from seir.operators.scoring import rubrics
from seir.operators.seir import prompts


@dataclass
class Plan:
    generation_key: str
    tasks: list[DialogueTask]  # every current seed's dialogue
    pending: list[DialogueTask]  # those not committed yet


def prompt_fingerprint() -> str:
    """Prompts are code: a change to them must change every dialogue key, so the source is part of the key."""
    return content_key([inspect.getsource(prompts), inspect.getsource(rubrics)])


def model_revisions(spec: JobSpec) -> dict[str, str]:
    """Each role's pinned revision, or the fingerprint of its files (building tiny models on first use), as the
    backends themselves compute it: known before any actor starts, so planning needs no Ray."""
    return {role: r.revision or fingerprint_model(resolve_model_ref(r.model)) for role, r in spec.roles.items()}


def plan_dialogues(spec: JobSpec, seeds: list[Seed], revisions: dict[str, str], committed: set[str]) -> Plan:
    generation_key = content_key([spec.generation_key(prompt_fingerprint()), dict(sorted(revisions.items()))])
    tasks = [
        DialogueTask(seed, seed.seed_id, content_key([seed.seed_key, generation_key]), seed.turns or spec.seir.turns)
        for seed in seeds
    ]
    return Plan(generation_key, tasks, [t for t in tasks if t.dialogue_key not in committed])


def pack_shards(run_id: str, tasks: list[DialogueTask], shard_size: int) -> list[tuple[str, list[str]]]:
    shards = []
    for start in range(0, len(tasks), shard_size):
        keys = [t.dialogue_key for t in tasks[start : start + shard_size]]
        shards.append((content_key([run_id, keys]), keys))
    return shards


class Runner:
    def __init__(self, spec: JobSpec, out_dir: Path, address: str | None = None, stream: TextIO = sys.stderr) -> None:
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.address = address
        self.stream = stream
        self.timings: dict[str, float] = {}  # seconds: starting the model pools, running the shards

    def say(self, message: str) -> None:
        print(f"[seir] {message}", file=self.stream, flush=True)

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        with OutputLock(self.out_dir), ProvenanceStore(self.out_dir) as store:
            seeds = load_seeds(self.spec.seeds)
            self.say(f"{len(seeds.seeds)} seeds, {len(seeds.quarantined)} quarantined lines")
            plan = plan_dialogues(self.spec, seeds.seeds, model_revisions(self.spec), store.committed_dialogue_keys())
            run_id, shards = self._start_or_resume(store, seeds, plan)
            by_key = {t.dialogue_key: t for t in plan.tasks}
            work = [(shard_id, [by_key[k] for k in keys]) for shard_id, keys in shards]
            if work:
                self._execute(store, run_id, plan, work)
            summary = self._finish(store, run_id, plan, seeds, started)
        self.say("done\n" + format_summary(summary))
        return summary

    def _start_or_resume(self, store: ProvenanceStore, seeds: SeedLoad,
                         plan: Plan) -> tuple[str, list[tuple[str, list[str]]]]:
        job_key = self.spec.key()
        run_id = store.unfinished_run("run", job_key)
        if run_id is not None:
            shards = store.planned_shards(run_id)
            self.say(f"resuming run {run_id}: {len(shards)} shards left")
            return run_id, shards
        run_id = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        shards = pack_shards(run_id, plan.pending, self.spec.execution.shard_size)
        store.begin_run(run_id, "run", self.spec.name, job_key, plan.generation_key,
                        self.spec.model_dump(mode="json"), seir.__version__, seeds.seeds, seeds.quarantined, shards)
        reused = len(plan.tasks) - len(plan.pending)
        self.say(f"run {run_id}: {len(plan.pending)} dialogues to make in {len(shards)} shards, {reused} reused")
        for data in seeds.images.values():
            ImageStore(self.out_dir).put(data)
        return run_id, shards

    def _execute(self, store: ProvenanceStore, run_id: str, plan: Plan,
                 work: list[tuple[str, list[DialogueTask]]]) -> None:
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, logging_level="WARNING")
        images = ImageStore(self.out_dir)
        self.say("starting model pools: " + ", ".join(f"{r} x{s.replicas}" for r, s in self.spec.roles.items()))
        pools = {role: RolePool(role, role_spec) for role, role_spec in self.spec.roles.items()}
        try:
            started = time.monotonic()
            configs = {role: pool.ready(max(pool.spec.timeout_s, 600)) for role, pool in pools.items()}
            self.timings["startup_s"] = time.monotonic() - started
            store.record_models(run_id, {role: (content_key(cfg), cfg) for role, cfg in configs.items()})
            clients = {role: ModelClient(role, pools[role], configs[role], store, images) for role in pools}
            loop = SeirLoop(self.spec, clients, StageScorer(self.spec, clients))
            progress = Progress(sum(len(tasks) for _, tasks in work), len(work), self.stream)
            started = time.monotonic()
            asyncio.run(self._run_shards(store, run_id, plan, loop, work, progress, images))
            self.timings["shards_s"] = time.monotonic() - started
        finally:
            for pool in pools.values():
                pool.shutdown()

    async def _run_shards(self, store: ProvenanceStore, run_id: str, plan: Plan, loop: SeirLoop,
                          work: list[tuple[str, list[DialogueTask]]], progress: Progress, images: ImageStore) -> None:
        in_flight = asyncio.Semaphore(self.spec.execution.shards_in_flight)

        async def one(shard_id: str, tasks: list[DialogueTask]) -> None:
            async with in_flight:
                outcome = await loop.run_shard(tasks)
            store.commit_shard(run_id, shard_id, outcome.dialogues, outcome.ledger, plan.generation_key,
                               images.relative_path)
            progress.shard_committed(outcome.dialogues, outcome.ledger)

        await asyncio.gather(*(one(shard_id, tasks) for shard_id, tasks in work))

    def _finish(self, store: ProvenanceStore, run_id: str, plan: Plan, seeds: SeedLoad,
                started: float) -> dict[str, Any]:
        version = write_version(store, self.out_dir, run_id, self.spec.key(), self.spec.model_dump(mode="json"),
                                seir.__version__, [s.seed_key for s in seeds.seeds])
        summary = run_summary(store.con, run_id)
        summary.update(wall_s=time.monotonic() - started, **self.timings, version=version.number,
                       version_path=str(version.path),
                       version_accepted=version.accepted, version_rejected=version.rejected)
        store.finish_run(run_id, summary)
        return summary
