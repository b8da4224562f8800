"""Runs from start to finish: plan, start the model pools, run shards through the SEIR loop, commit each shard,
decide acceptance, dedup, and write a dataset version.

Three kinds of run share that path: ``run`` (also ``seir refresh``: make what is missing, reuse the rest),
``rescore`` (score existing dialogues again with the job's scorers, regenerate nothing) and ``dedup`` (the
dedup pass alone). A run that was interrupted is resumed by running the same command again: its plan and its
progress are read back from the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import ray

import seir
from seir.engine.dedup import dedup_accepted
from seir.engine.errors import SeirError
from seir.engine.export import write_judge_eval_report, write_report
from seir.engine.failpoints import failpoint
from seir.engine.keys import content_key
from seir.engine.logs import log_path, quiet
from seir.engine.progress import Meter, say
from seir.engine.records import DialogueJudgement, Ledger, PriorDraft, StageRecord
from seir.engine.run.budget import Budget, Spend
from seir.engine.run.clients import LayeredCache, ModelClient, RoleHealth
from seir.engine.run.forecast import Forecast, forecast
from seir.engine.run.loop import SeirLoop
from seir.engine.run.planning import (
    PLAN_ROWS,
    Plan,
    changes,
    model_revisions,
    plan_dialogues,
    run_keys,
    with_family_sampling,
)
from seir.engine.run.pools import RolePool
from seir.engine.run.scoring import StageScorer, blocking_call, judge_sampling, scorer_roles
from seir.engine.run.summary import Progress, format_summary, run_summary
from seir.engine.seeds import image_key_only, plan_seeds
from seir.engine.spec import JobSpec, role_needs
from seir.engine.store import (
    LATEST_CANDIDATES,
    ImageStore,
    KeptTurn,
    OutputLock,
    ProvenanceStore,
    SharedCallCache,
    VerdictInbox,
    Version,
    decide,
    keep_snapshots,
    version_name,
    write_version,
)
from seir.operators.backends.base import CallFailure, ProbeReport
from seir.operators.scoring.judge import JudgeScorer
from seir.operators.scoring.judge_eval import JudgeEvalReport, evaluate, judged_items, read_eval_data
from seir.operators.scoring.rubrics import DialogueView, TurnView
from seir.operators.stages import TurnContext

RESCORE_BATCH = 64  # turns judged per batched scorer call during a rescore
EMBED_BATCH = 256  # dialogues embedded per call before the dedup pass: progress between calls


class ModelPools:
    """Actor pools started on first need and shut down together."""

    def __init__(self, spec: JobSpec, store: ProvenanceStore, run_id: str, images: ImageStore, address: str | None,
                 say: Any, shared_cache: SharedCallCache | None = None, stream: TextIO = sys.stderr,
                 log_path: str | None = None) -> None:
        self.spec, self.store, self.run_id, self.images, self.stream = spec, store, run_id, images, stream
        self.log_path = log_path  # where workers write what they print (None: to the terminal)
        self.cache = LayeredCache(store, shared_cache, images)
        self.address, self.say = address, say
        self.pools: dict[str, RolePool] = {}
        self.clients: dict[str, ModelClient] = {}
        self.startup_s = 0.0

    def ensure(self, roles: list[str]) -> dict[str, ModelClient]:
        wanted = [r for r in roles if r not in self.pools]
        if wanted:
            self.say("starting model pools: " + ", ".join(f"{r} x{self.spec.roles[r].replicas}" for r in wanted))
            started = time.monotonic()
            with Meter("loading models", len(wanted), "roles", self.stream) as meter:
                if not ray.is_initialized():
                    # Workers' output stays out of the terminal unless --verbose: they write to the log file.
                    ray.init(address=self.address, include_dashboard=False, logging_level="WARNING",
                             log_to_driver=self.log_path is None)
                fresh = {role: RolePool(role, self.spec.roles[role], self.log_path) for role in wanted}
                self.pools.update(fresh)
                needs = role_needs(self.spec)
                configs = {role: meter.counted_call(pool.ready, max(pool.spec.timeout_s, 600), needs[role])
                           for role, pool in fresh.items()}
            self.startup_s += time.monotonic() - started
            reports = {role: pool.report for role, pool in fresh.items()}
            self.store.record_models(self.run_id, {role: (content_key(cfg), cfg) for role, cfg in configs.items()},
                                     reports)
            self._refuse_unable(reports)
            windows = [f"{role} {pool.window.describe()}" for role, pool in fresh.items() if pool.window]
            if windows:
                self.say("context windows: " + ", ".join(windows))
            for role, config in configs.items():
                self.clients[role] = ModelClient(role, fresh[role], config, self.cache, self.images)
        return self.clients

    def _refuse_unable(self, reports: dict[str, ProbeReport | None]) -> None:
        """Print each probed server's line; stop before any work when a role's server cannot do what the job needs."""
        problems = []
        for role, report in reports.items():
            if report is None:
                continue
            self.say(f"{role}: {report.line()}")
            problems += [f"role {role} ({self.spec.roles[role].backend} at {report.server}): {problem}"
                         for problem in report.problems]
        if problems:
            raise SeirError("the model servers cannot do what this job needs, so nothing was run:\n  "
                            + "\n  ".join(problems))

    def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.shutdown()


class Runner:
    def __init__(self, spec: JobSpec, out_dir: Path, address: str | None = None, stream: TextIO = sys.stderr,
                 cache_dir: Path | None = None, verbose: bool = False, budget: Budget | None = None) -> None:
        self.verbose = verbose  # everything on the terminal, not only seir's own lines
        self.budget = budget or Budget.of(spec)
        self.stopped: str | None = None  # why a budget stopped the last run early, and what the rest costs
        self.spec = with_family_sampling(spec)
        self.out_dir = Path(out_dir)
        cache_dir = cache_dir or spec.execution.cache
        self.shared_cache = SharedCallCache(cache_dir) if cache_dir else None
        self.address = address
        self.stream = stream
        self.images = ImageStore(self.out_dir)
        self.forecast: Forecast | None = None  # what the last printed plan predicted
        self.timings: dict[str, float] = {}  # seconds: starting the model pools, running the shards
        self.target_note: str | None = None  # how a target of accepted dialogues was met, and from how many seeds

    def say(self, message: str) -> None:
        say(self.stream, message)

    # -- run / refresh ----------------------------------------------------------------------------------------------
    def run(self, show_plan: bool = False, dry_run: bool = False) -> dict[str, Any] | None:
        """Make every dialogue the job's seeds call for that is not committed yet; reuse the rest. A run that was
        interrupted is resumed from its own plan; the seed files are read again by the next run."""
        started = time.monotonic()
        with self._session() as store:
            run_id = None if dry_run else store.unfinished_run("run", self.spec.key())
            if run_id is None:
                plan = self._plan(store, image_key_only if dry_run else self.images.put, show_plan or dry_run)
                if dry_run:
                    return None
                run_id = self._begin(store, "run", plan, "SELECT * FROM plan_dialogues")
            else:
                self.say(f"resuming run {run_id}: {store.shards_left(run_id)[0]} shards left")
            failpoint("run-begun")
            with self._pools(store, run_id) as pools:
                self.stopped = self._run_shards(store, run_id, pools)
                self._decide_all(store, run_id, pools)
                self.timings["startup_s"] = pools.startup_s
            return self._finish(store, run_id, "run", started, partial=self.stopped)

    def _plan(self, store: ProvenanceStore, put_image: Callable[[bytes], str], show: bool) -> Plan:
        """Read and plan the job's seeds into the store's temp tables; print the plan when ``show``."""
        counts = plan_seeds(store.scratch(), self.spec.seeds, put_image, self.stream)
        self.say(f"{counts.kept} seeds, {counts.quarantined} quarantined lines, "
                 f"{counts.near_duplicates} near-duplicate seeds dropped")
        plan = plan_dialogues(store, self.spec, model_revisions(self.spec))
        if show:
            self.say("plan:\n" + self._plan_text(store, plan))
        return plan

    def _plan_text(self, store: ProvenanceStore, plan: Plan) -> str:
        found = changes(store, self.spec)
        with store.held():
            self.forecast = forecast(self._remade(store), store.prior_call_maxima(), found,
                                     store.previous_job_spec(), self.spec)
        return found.describe() + "\n" + self.forecast.describe() + "\n" + self._cost_text(store)

    @staticmethod
    def _remade(store: ProvenanceStore) -> Iterator[tuple[int, list[PriorDraft]]]:
        """Each planned dialogue not committed yet: its turns and its seed's earlier drafts, a page at a time."""
        for page in store.pending_plan_pages(PLAN_ROWS):
            seed_keys = page.column("seed_key").to_pylist()
            by_seed: dict[str, list[PriorDraft]] = {}
            for draft in store.prior_drafts(seed_keys):
                by_seed.setdefault(draft.seed_key, []).append(draft)
            for seed_key, turns in zip(seed_keys, page.column("turns").to_pylist(), strict=True):
                yield turns, by_seed.get(seed_key, [])

    def _cost_text(self, store: ProvenanceStore) -> str:
        """The forecast's computed calls priced at the rates this output measured."""
        if self.forecast is None or not self.forecast.known:
            return "cost: no earlier calls in this output to measure rates from"
        rates = store.measured_rates()
        lines, total = ["cost at this output's measured rates (upper bounds):"], [0, 0.0, 0.0, 0.0]
        for role, predicted in sorted(self.forecast.roles.items()):
            tokens, busy = rates.get(role, (0.0, 0.0))
            calls = predicted.computed_max
            gpu_h = calls * busy * self.spec.roles[role].num_gpus / 3600
            lines.append(f"  {role}: {calls} calls, {calls * tokens:.0f} tokens, {calls * busy:.1f} busy s, "
                         f"{gpu_h:.3f} GPU hours" + ("" if role in rates else " (no rate measured yet)"))
            total = [total[0] + calls, total[1] + calls * tokens, total[2] + calls * busy, total[3] + gpu_h]
        lines.append(f"  total: {total[0]} calls, {total[1]:.0f} tokens, {total[2]:.1f} busy s, "
                     f"{total[3]:.3f} GPU hours")
        return "\n".join(lines)

    def _begin(self, store: ProvenanceStore, kind: str, plan: Plan, candidates: str | None) -> str:
        """Record a new run of ``kind`` over ``candidates`` (a query of its dialogues); a run also packs its shards."""
        run_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        shards = store.begin_run(run_id, kind, self.spec.name, self.spec.key(), plan.generation_key,
                                 plan.scoring_key, self.spec.model_dump(mode="json"), seir.__version__, candidates,
                                 self.spec.execution.shard_size if kind == "run" else None,
                                 [StageRecord.of(stage) for stage in self.spec.seir.stage_units()]
                                 if kind == "run" else ())
        if kind == "run":
            self.say(f"run {run_id}: {plan.pending} dialogues to make in {shards} shards, "
                     f"{plan.dialogues - plan.pending} reused")
        else:
            self.say(f"{kind} {run_id}")
        return run_id

    def _run_shards(self, store: ProvenanceStore, run_id: str, pools: ModelPools) -> str | None:
        """Run and commit the run's planned shards in order; returns why a budget or the target stopped them early
        (None when all ran). With a target of accepted dialogues, each pass ends with the dedup pass, and shards go
        on until the target holds after dedup."""
        target = self.budget.accepted
        shards, dialogues = store.shards_left(run_id)
        if not shards:
            return None
        clients = pools.ensure(list(self.spec.roles))
        loop = SeirLoop(self.spec, clients, StageScorer(self.spec, clients), self.images)
        generation_key = store.generation_key_of(run_id)
        spend = Spend()
        num_gpus = {role: spec.num_gpus for role, spec in self.spec.roles.items()}
        progress = Progress(dialogues, shards, self.stream)
        loop.on_round = progress.note_round
        started = time.monotonic()
        accepted_before = 0  # accepted after dedup when this pass began
        if target is not None:
            accepted_before = self._decide_all(store, run_id, pools)
            self.say(f"target: {target} accepted dialogues; {accepted_before} accepted so far")
        reason = None
        with progress:
            while True:
                # this pass's goal, in the progress's count of accepted (before dedup, so at least the target)
                goal = None if target is None else progress.accepted + target - accepted_before
                reason = asyncio.run(self._shard_pass(store, run_id, loop, generation_key, spend, num_gpus, progress,
                                                      goal))
                if target is None or reason is not None or not store.shards_left(run_id)[0]:
                    break
                accepted_before = self._decide_all(store, run_id, pools)
                if accepted_before >= target:
                    break
        self.timings["shards_s"] = time.monotonic() - started
        left, left_dialogues = store.shards_left(run_id)
        if target is not None and reason is None and left:
            self.target_note = (f"target reached: {accepted_before} accepted after dedup from "
                                f"{store.seeds_used(run_id)} seeds")
            self.say(f"{self.target_note}; stopped at a shard boundary with {left_dialogues} dialogues left, run "
                     "again with a larger target to make more")
            return None
        if reason is None:
            return None
        stopped = (f"budget reached ({reason}): stopped after {progress.shards} of {shards} shards "
                   f"({progress.dialogues} of {dialogues} dialogues); the other {left_dialogues} would "
                   f"cost {spend.rest(left_dialogues)} at this run's rate. Run again with a larger cap to make them.")
        self.say(stopped)
        return stopped

    async def _shard_pass(self, store: ProvenanceStore, run_id: str, loop: SeirLoop, generation_key: str,
                          spend: Spend, num_gpus: dict[str, float], progress: Progress,
                          goal: int | None) -> str | None:
        """Shards in plan order, ``shards_in_flight`` at a time, read from the store as they are started; each
        committed when done. Stops starting shards once a budget is spent (returning why) or ``goal`` dialogues
        are accepted."""
        planned = store.planned_shards(run_id)
        reason: str | None = None
        health = RoleHealth()

        async def worker() -> None:
            nonlocal reason
            while True:
                reason = reason or spend.over(self.budget)
                reached = goal is not None and progress.accepted >= goal
                shard = None if reason is not None or reached else next(planned, None)
                if shard is None:  # a shard boundary: every later shard waits for the next pass or run
                    return
                shard_id, tasks = shard
                outcome = await loop.run_shard(tasks)
                decided = [decide(d.failure, [t.scores for t in d.turns], self.spec.scoring.thresholds,
                                  d.dialogue_scores()) for d in outcome.dialogues]
                store.commit_shard(run_id, shard_id, outcome.dialogues, decided, outcome.ledger, generation_key,
                                   self.images.relative_path)
                spend.add(outcome.ledger, len(outcome.dialogues), num_gpus)
                health.add(outcome.ledger)
                health.stop_if_broken()
                self._publish(run_id, outcome.ledger)
                progress.shard_committed(outcome.dialogues, decided, outcome.ledger)
                failpoint("shard-committed")

        await asyncio.gather(*(worker() for _ in range(self.spec.execution.shards_in_flight)))
        return reason

    def _decide_all(self, store: ProvenanceStore, run_id: str, pools: ModelPools) -> int:
        """Acceptance of every dialogue of the run under this job's thresholds (and people's verdicts, with every one
        given so far stored first), then the dedup pass; returns how many are accepted after it."""
        VerdictInbox(self.out_dir).fold(store)
        store.redecide(run_id, self.spec.scoring)
        self._embed_missing(store, run_id, pools)
        dedup_accepted(store, self.spec.dedup, self._embed_key(), self.images, run_id, self.stream)
        return store.accepted_after_dedup(run_id)

    # -- rescore ----------------------------------------------------------------------------------------------------
    def rescore(self) -> dict[str, Any]:
        """Score the latest version's dialogues again with this job's scorers and thresholds; regenerate nothing.
        Turns last scored under the same scoring config are re-decided without any model call."""
        started = time.monotonic()
        with self._session() as store:
            run_id, plan, candidates = self._begin_on_latest(store, "rescore")
            stale = store.scored_under_other_config(run_id, plan.scoring_key)
            self.say(f"rescoring {len(stale)} of {candidates} dialogues; re-deciding all of them")
            with self._pools(store, run_id) as pools:
                if stale:
                    roles = scorer_roles(self.spec)
                    scorer = StageScorer(self.spec, pools.ensure(roles))
                    with Meter("rescore", len(stale), "dialogues", self.stream) as meter:
                        for start in range(0, len(stale), RESCORE_BATCH):
                            batch = stale[start : start + RESCORE_BATCH]
                            asyncio.run(self._rescore_batch(store, run_id, scorer, batch))
                            meter.advance(len(batch))
                self._decide_all(store, run_id, pools)
            return self._finish(store, run_id, "rescore", started)

    async def _rescore_batch(self, store: ProvenanceStore, run_id: str, scorer: StageScorer,
                             dialogue_keys: list[str]) -> None:
        """One committed batch: every kept draft of every stage of every turn of these dialogues, judged again on what
        its stage shows the judge, from the same context the loop built."""
        ledger = Ledger()
        kept = store.kept_turns(dialogue_keys)
        contexts = [self._context(turn) for turn in kept]
        turn_scores: dict[tuple[str, int], dict[str, float]] = {}
        draft_scores = []
        for stage in self.spec.seir.stage_units():
            rows = [(turn, context) for turn, context in zip(kept, contexts, strict=True) if stage.name in turn.drafts]
            views = [stage.view(context, turn.drafts[stage.name]) for turn, context in rows]
            for (turn, _), verdict in zip(rows, await scorer.verdicts(stage, views, ledger), strict=True):
                if verdict.failure:
                    raise SeirError(f"rescoring {turn.dialogue_key} failed: {verdict.failure}. Run the same command "
                                    "again to resume; rescored batches are kept.")
                turn_scores.setdefault((turn.dialogue_key, turn.turn_index), {}).update(verdict.combined)
                draft_scores.append((turn.drafts[stage.name].draft_key, turn.dialogue_key, verdict.scores))
        judged = await self._rescore_dialogues(scorer, kept, ledger)
        store.commit_rescore(run_id, draft_scores, turn_scores, ledger, self.images.relative_path, judged)
        self._publish(run_id, ledger)

    def _context(self, turn: KeptTurn) -> TurnContext:
        """A committed turn's context as the loop had it: its history, the pictures the user brought, the kept drafts
        of its stages and the pictures they made."""
        shown = [[self.images.get(key) for key in keys] for keys in turn.turn_images[: turn.turn_index + 1]]
        made = {d.image_key: self.images.get(d.image_key) for d in turn.drafts.values() if d.image_key}
        return TurnContext.at(turn.turn_index, turn.history, shown, turn.turn_images, kept=dict(turn.drafts),
                              images=made)

    async def _rescore_dialogues(self, scorer: StageScorer, kept: list[KeptTurn],
                                 ledger: Ledger) -> list[tuple[str, DialogueJudgement]]:
        """The dialogue-level dimensions again, over the kept turns."""
        dimensions = scorer.dialogue_dimensions()
        by_dialogue: dict[str, list[KeptTurn]] = {}
        for turn in kept:
            by_dialogue.setdefault(turn.dialogue_key, []).append(turn)
        if not dimensions or not by_dialogue:
            return []
        views = [DialogueView([TurnView(t.question, t.answer, t.caption,
                                        self.images.get(t.image_key) if t.image_key else None,
                                        shown=self._shown(t.turn_images, t.turn_index)) for t in turns])
                 for turns in by_dialogue.values()]
        verdicts = await scorer.verdicts_on(dimensions, views, ledger)
        failed = next((v.failure for v in verdicts if v.failure), None)
        if failed:
            raise SeirError(f"rescoring dialogues failed: {failed}. Run the same command again to resume.")
        return [(key, DialogueJudgement(v.scores, v.critique, v.call_keys))
                for key, v in zip(by_dialogue, verdicts, strict=True)]

    def _shown(self, turn_images: list[list[str]], turn_index: int) -> list[bytes]:
        """The pictures the user brought with a turn."""
        return [self.images.get(key) for key in turn_images[turn_index]] if turn_index < len(turn_images) else []

    # -- dedup alone ------------------------------------------------------------------------------------------------
    def dedup(self) -> dict[str, Any]:
        """The dedup pass over the latest version's dialogues, written as a new version."""
        started = time.monotonic()
        with self._session() as store:
            run_id, _, _ = self._begin_on_latest(store, "dedup")
            with self._pools(store, run_id) as pools:
                self._embed_missing(store, run_id, pools)
                dedup_accepted(store, self.spec.dedup, self._embed_key(), self.images, run_id, self.stream)
            return self._finish(store, run_id, "dedup", started)

    # -- judge evaluation -------------------------------------------------------------------------------------------
    def judge_eval(self, data: Path, rubric: str, limit: int | None = None) -> JudgeEvalReport:
        """Score a human-annotated set with the job's judge and report agreement, recorded like any run."""
        eval_set = read_eval_data(data)
        if limit is not None:
            eval_set = dataclasses.replace(eval_set, items=eval_set.items[:limit])
        with self._session() as store:
            run_id = self._begin(store, "judge-eval", run_keys(self.spec, model_revisions(self.spec)), None)
            self.say(f"judging {len(eval_set.items)} items of {data} on the {rubric} rubric")
            with self._pools(store, run_id) as pools:
                judge = pools.ensure(["judge"])["judge"]
                ledger = Ledger()

                async def scored() -> JudgeEvalReport:
                    loop = asyncio.get_running_loop()
                    scorer = JudgeScorer(blocking_call(judge, "chat", loop, ledger),
                                         blocking_call(judge, "score", loop, ledger),
                                         sampling=judge_sampling(self.spec))
                    return await asyncio.to_thread(evaluate, eval_set, scorer, rubric, on_batch=meter.advance)

                with Meter("judge-eval", judged_items(eval_set, rubric), "items", self.stream) as meter:
                    report = asyncio.run(scored())
                store.commit_calls(run_id, ledger, self.images.relative_path)
                self._publish(run_id, ledger)
            target = self.out_dir / "judge-eval" / f"{run_id}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(report.to_json(), encoding="utf-8")
            page = write_judge_eval_report(report, target.with_suffix(".html"))
            summary = {k: v for k, v in report.to_dict().items() if k != "predictions"}
            store.finish_run(run_id, {**summary, "report_path": str(target)})
        self.say(f"report: {target}, plots: {page}\n{report.to_text()}")
        return report

    # -- shared -----------------------------------------------------------------------------------------------------
    def _begin_on_latest(self, store: ProvenanceStore, kind: str) -> tuple[str, Plan, list[str]]:
        """Start (or resume) a run that works on the latest version's dialogues: its id, plan and how many."""
        plan = run_keys(self.spec, model_revisions(self.spec))
        run_id = store.unfinished_run(kind, self.spec.key())
        if run_id is not None:
            self.say(f"resuming {kind} {run_id}")
        elif not store.latest_version_size():
            raise SeirError(f"{self.out_dir} has no dataset version to {kind}: run a job into it first")
        else:
            run_id = self._begin(store, kind, plan, LATEST_CANDIDATES)
        return run_id, plan, store.run_size(run_id)

    @contextmanager
    def _session(self) -> Iterator[ProvenanceStore]:
        with OutputLock(self.out_dir), quiet(self.out_dir, self.verbose), ProvenanceStore(self.out_dir) as store:
            store.release_between_uses()  # readers (seir sql, DuckDB clients) get in between commits
            yield store

    @contextmanager
    def _pools(self, store: ProvenanceStore, run_id: str) -> Iterator[ModelPools]:
        pools = ModelPools(self.spec, store, run_id, self.images, self.address, self.say, self.shared_cache,
                           stream=self.stream, log_path=None if self.verbose else str(log_path(self.out_dir)))
        try:
            yield pools
        finally:
            pools.shutdown()

    def _embed_missing(self, store: ProvenanceStore, run_id: str, pools: ModelPools) -> None:
        """Semantic dedup compares dialogue embeddings: make those the embed role has not made yet."""
        if not self.spec.dedup.judges("dialogue.embedding"):
            return
        embed_key = self._embed_key()
        total = store.missing_embedding_count(run_id, embed_key)
        if not total:
            return
        client = pools.ensure(["embed"])["embed"]
        with Meter("embedding for dedup", total, "dialogues", self.stream) as meter:
            for missing in store.missing_embeddings(run_id, embed_key):  # each page committed when embedded
                ledger = Ledger()
                vectors: list[list[float] | CallFailure] = []
                for start in range(0, len(missing), EMBED_BATCH):
                    texts = [text for _, text in missing[start : start + EMBED_BATCH]]
                    vectors += asyncio.run(client.embed(texts, ledger))
                    meter.advance(len(texts))
                failed = next((v for v in vectors if isinstance(v, CallFailure)), None)
                if failed is not None:
                    raise SeirError(f"embedding dialogues for semantic dedup failed: {failed.reason}. Fix the embed "
                                    "role, or drop 'semantic' from dedup.methods, and run the same command again.")
                store.commit_embeddings(run_id, embed_key,
                                        [(k, v) for (k, _), v in zip(missing, vectors, strict=True)],
                                        ledger, self.images.relative_path)
                self._publish(run_id, ledger)

    def _embed_key(self) -> str:
        """What dialogue embeddings are stored under: the embed role's output config ('' when the job has none)."""
        return content_key(self.spec.roles["embed"].output_config()) if "embed" in self.spec.roles else ""

    def _publish(self, run_id: str, ledger: Ledger) -> None:
        """After the output's own commit: a crash between the two loses the cache entries, never the output's."""
        if self.shared_cache is not None:
            self.shared_cache.publish(run_id, self.out_dir, ledger.calls, self.images)

    def _finish(self, store: ProvenanceStore, run_id: str, kind: str, started: float,
                partial: str | None = None) -> dict[str, Any]:
        failpoint("deduped")
        with store.held() as con:
            version: Version = write_version(store, self.out_dir, run_id, kind, self.spec.key(),
                                             self.spec.model_dump(mode="json"), seir.__version__,
                                             partial=partial is not None)
            report = write_report(con, self.out_dir, version.number)
            summary = run_summary(con, run_id)
        summary.update(wall_s=time.monotonic() - started, **self.timings, version=version.number,
                       version_path=str(version.path))
        summary["report_path"] = str(report)
        if partial is not None:
            summary["partial"] = partial
        if self.target_note is not None:
            summary["target"] = self.target_note
        store.finish_run(run_id, summary, "partial" if partial else "finished")
        snapshot = keep_snapshots(self.out_dir, f"{version_name(version.number)}-{run_id}",
                                  self.spec.execution.snapshots)
        if snapshot is not None:
            summary["snapshot"] = f"{snapshot.folder} ({snapshot.bytes / 2**20:.1f} MiB, {snapshot.seconds:.1f} s)"
        self.say(("partial version written\n" if partial else "done\n") + format_summary(summary))
        return summary
