"""Runs and their plans: a run's record, its seeds, quarantined input and planned shards, and what resuming or
planning the next run reads back (unfinished runs, committed dialogues, prior drafts, the latest candidates)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from seir.engine.records import PriorDraft, Quarantined, Seed, SeedDuplicate, Stage
from seir.engine.store.base import StoreBase, held, now


@dataclass(frozen=True)
class Committed:
    dialogue_id: str
    seed_key: str


class RunRecords(StoreBase):
    @held
    def unfinished_run(self, kind: str, job_key: str) -> str | None:
        rows = self.con.execute(
            "SELECT run_id FROM runs WHERE kind = ? AND job_key = ? AND status = 'running' ORDER BY started_at DESC",
            [kind, job_key],
        ).fetchall()
        return rows[0][0] if rows else None

    def begin_run(self, run_id: str, kind: str, job_name: str, job_key: str, generation_key: str,
                  scoring_key: str, job_spec: dict[str, Any], engine_version: str, seeds: Sequence[Seed],
                  quarantined: Sequence[Quarantined], plan: Sequence[tuple[str, list[str]]],
                  seed_duplicates: Sequence[SeedDuplicate] = ()) -> None:
        """Record a new run, its new seeds, its quarantined input and its planned shards, all at once. Older
        unfinished runs are marked superseded: their committed shards stay, their plan is dropped."""
        with self.transaction():
            self.con.execute("UPDATE runs SET status = 'superseded' WHERE status = 'running'")
            self.con.execute(
                "INSERT INTO runs BY NAME SELECT ? AS run_id, ? AS kind, ? AS job_name, ? AS job_key, "
                "? AS generation_key, ? AS scoring_key, ? AS job_spec, ? AS engine_version, ? AS started_at, "
                "'running' AS status",
                [run_id, kind, job_name, job_key, generation_key, scoring_key, json.dumps(job_spec), engine_version,
                 now()],
            )
            known = {row[0] for row in self.con.execute("SELECT seed_key FROM seeds").fetchall()}
            fresh = [s for s in seeds if s.seed_key not in known]
            self._insert("seeds", {
                "seed_key": [s.seed_key for s in fresh], "seed_id": [s.seed_id for s in fresh],
                "source": [s.source for s in fresh], "text": [s.text for s in fresh],
                "topic": [s.topic for s in fresh], "template": [s.template for s in fresh],
                "images": [list(s.images) for s in fresh], "turns": [s.turns for s in fresh],
                "turn_images": pa.array([[list(keys) for keys in s.turn_images] for s in fresh],
                                        pa.list_(pa.list_(pa.string()))),
                "run_id": [run_id] * len(fresh),
            })
            self._insert("quarantine", {
                "run_id": [run_id] * len(quarantined), "source": [q.source for q in quarantined],
                "line": [q.line for q in quarantined], "field": [q.field for q in quarantined],
                "reason": [q.reason for q in quarantined], "raw": [q.raw for q in quarantined],
            })
            self._insert("seed_duplicates", {
                "run_id": [run_id] * len(seed_duplicates), "seed_key": [d.seed.seed_key for d in seed_duplicates],
                "seed_id": [d.seed.seed_id for d in seed_duplicates],
                "source": [d.seed.source for d in seed_duplicates], "text": [d.seed.text for d in seed_duplicates],
                "kept_seed_key": [d.kept.seed_key for d in seed_duplicates],
                "kept_seed_id": [d.kept.seed_id for d in seed_duplicates],
                "method": [d.method for d in seed_duplicates], "similarity": [d.similarity for d in seed_duplicates],
            })
            self._insert("shards", {
                "shard_id": [shard_id for shard_id, _ in plan], "run_id": [run_id] * len(plan),
                "position": list(range(len(plan))), "dialogue_keys": [keys for _, keys in plan],
                "status": ["planned"] * len(plan), "committed_at": [None] * len(plan),
            })

    def record_models(self, run_id: str, models: dict[str, tuple[str, dict[str, Any]]],
                      probes: Mapping[str, Any] | None = None) -> None:
        """``models``: role -> (model key, backend config); ``probes``: role -> what its model server said it can do
        (a ``ProbeReport``; None for local backends)."""
        probes = probes or {}
        with self.transaction():
            self.con.execute("DELETE FROM models WHERE run_id = ?", [run_id])
            self._insert("models", {
                "model_key": [key for key, _ in models.values()], "run_id": [run_id] * len(models),
                "role": list(models), "backend": [cfg.get("operator") for _, cfg in models.values()],
                "model_id": [cfg.get("model") for _, cfg in models.values()],
                "revision": [cfg.get("revision") for _, cfg in models.values()],
                "config": [json.dumps(cfg, default=str) for _, cfg in models.values()],
                "probe": [json.dumps(asdict(probes[role])) if probes.get(role) else None
                          for role in models],
            })

    @held
    def finish_run(self, run_id: str, summary: dict[str, Any], status: str = "finished") -> None:
        """``status``: finished, or partial (a budget stopped it; the next run makes the rest)."""
        self.con.execute(
            "UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE run_id = ?",
            [status, now(), json.dumps(summary), run_id],
        )

    @held
    def planned_shards(self, run_id: str) -> list[tuple[str, list[str]]]:
        """The run's shards not yet committed, in plan order."""
        return [(r[0], list(r[1])) for r in self.con.execute(
            "SELECT shard_id, dialogue_keys FROM shards WHERE run_id = ? AND status = 'planned' ORDER BY position",
            [run_id],
        ).fetchall()]

    @held
    def committed_dialogue_keys(self) -> set[str]:
        return {row[0] for row in self.con.execute("SELECT dialogue_key FROM dialogues").fetchall()}

    @held
    def committed_dialogues(self) -> dict[str, Committed]:
        rows = self.con.execute("SELECT dialogue_key, dialogue_id, seed_key FROM dialogues").fetchall()
        return {key: Committed(dialogue_id, seed_key) for key, dialogue_id, seed_key in rows}

    @held
    def prior_drafts(self, seed_keys: Sequence[str]) -> list[PriorDraft]:
        """Every draft of the newest committed dialogue of each of these seeds, with its calls per role."""
        rows = self.con.execute(
            """WITH latest AS (SELECT seed_key, arg_max(dialogue_key, created_at) AS dialogue_key FROM dialogues
                               WHERE seed_key IN (SELECT unnest(?::VARCHAR[])) GROUP BY seed_key),
                    roles AS (SELECT DISTINCT call_key, role FROM model_calls)
               SELECT l.seed_key, dr.turn_index, dr.stage, dr.round, list(r.role)
               FROM latest l JOIN drafts dr USING (dialogue_key), unnest(dr.call_keys) AS u(call_key)
               JOIN roles r ON r.call_key = u.call_key
               GROUP BY ALL""", [list(seed_keys)]).fetchall()
        return [PriorDraft(seed_key, turn, Stage(stage), round_, dict(Counter(roles)))
                for seed_key, turn, stage, round_, roles in rows]

    @held
    def latest_candidates(self) -> list[tuple[str, str]]:
        """(dialogue id, dialogue key) of every dialogue the latest version considered, accepted or not."""
        return [tuple(row) for row in self.con.execute(
            """SELECT dialogue_id, dialogue_key FROM version_dialogues
               WHERE version = (SELECT max(version) FROM versions) ORDER BY dialogue_id""").fetchall()]

    @held
    def previous_job_spec(self) -> dict[str, Any] | None:
        rows = self.con.execute("SELECT job_spec FROM runs WHERE kind = 'run' AND status = 'finished' "
                                "ORDER BY started_at DESC LIMIT 1").fetchall()
        return json.loads(rows[0][0]) if rows else None
