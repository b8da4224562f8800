"""The provenance store: one DuckDB file per output folder, written by one process only.

Workers never open it: the driver's committer ingests a whole shard (dialogues, turns, drafts, scores, images,
model calls) in one transaction and marks the shard committed, so a shard is committed exactly once. Every row
carries the run that produced it and the content key of what produced it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from seir.engine.calls import Ledger
from seir.engine.decide import decide
from seir.engine.errors import SeirError
from seir.engine.records import Dialogue, PriorDraft, Quarantined, Score, Seed, SeedDuplicate, Stage
from seir.engine.schema import MIGRATIONS, SCHEMA_V1, SCHEMA_VERSION, VIEWS

# The oldest DuckDB release that opens provenance.duckdb (DuckDB's `storage_compatibility_version`).
STORAGE_VERSION = "v1.4.0"


class StoreError(SeirError):
    pass


# A dialogue's text for dedup and embeddings: every turn's question, answer and caption, in order.
_DIALOGUE_TEXT = """coalesce((SELECT string_agg(t.question || ' ' || t.answer || ' ' || t.caption, ' '
                                     ORDER BY t.turn_index) FROM turns t WHERE t.dialogue_key = d.dialogue_key), '')"""


@dataclass(frozen=True)
class Committed:
    dialogue_id: str
    seed_key: str


@dataclass(frozen=True)
class KeptDraft:
    draft_key: str
    dialogue_key: str
    turn_index: int
    stage: str
    question: str
    answer: str
    caption: str | None
    image_key: str | None
    history: list[tuple[str, str]]


@dataclass(frozen=True)
class DedupRow:
    dialogue_id: str
    text: str
    score: float
    order: int
    image_keys: list[str]
    embedding: list[float] | None


def now() -> datetime:
    return datetime.now(timezone.utc)



class ProvenanceStore:
    FILENAME = "provenance.duckdb"

    def __init__(self, out_dir: Path, read_only: bool = False) -> None:
        self.path = Path(out_dir) / self.FILENAME
        if read_only and not self.path.exists():
            raise StoreError(f"no provenance database at {self.path}: run `seir run JOB --out {out_dir}` first")
        try:
            # A new file is written in DuckDB 1.4's storage format, so the clients people have (the PyPI CLI,
            # DBeaver, Python duckdb 1.x) open it; a file keeps the format it was created in (docs/provenance.md).
            self.con = duckdb.connect(str(self.path), read_only=read_only,
                                      config={"storage_compatibility_version": STORAGE_VERSION})
        except duckdb.IOException as err:
            raise StoreError(f"cannot open {self.path}: {err}. Another seir process may be writing it; "
                             "wait for it to finish.") from None
        if not read_only:
            self._create_or_migrate()
        else:
            self._check_version()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> ProvenanceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------------------------------
    def _create_or_migrate(self) -> None:
        found = self._stored_version()
        if found is None:
            with self.transaction():
                self.con.execute(SCHEMA_V1)
                self.con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
            found = 1
        self._refuse_newer(found)
        for version in range(found, SCHEMA_VERSION):
            with self.transaction():  # each step commits whole or not at all
                self.con.execute(MIGRATIONS[version])
                self.con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(version + 1)])
        self.con.execute(VIEWS)

    def _stored_version(self) -> int | None:
        has_meta = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'meta' AND database_name = current_database()"
        ).fetchall()[0][0]
        if not has_meta:
            return None
        rows = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        return int(rows[0][0]) if rows else None

    def _refuse_newer(self, found: int | None) -> None:
        if found is not None and found > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has provenance schema v{found}, newer than the v{SCHEMA_VERSION} this "
                             "seir knows: upgrade seir to use this output.")

    def _check_version(self) -> None:
        found = self._stored_version()
        self._refuse_newer(found)
        if found != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has provenance schema v{found}, this seir reads v{SCHEMA_VERSION}: "
                             "open it once for writing (any seir command that writes, e.g. `seir dedup`) to "
                             "migrate it forward.")

    # -- runs -----------------------------------------------------------------------------------------------------
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

    def record_models(self, run_id: str, models: dict[str, tuple[str, dict[str, Any]]]) -> None:
        """``models``: role -> (model key, backend config)."""
        with self.transaction():
            self.con.execute("DELETE FROM models WHERE run_id = ?", [run_id])
            self._insert("models", {
                "model_key": [key for key, _ in models.values()], "run_id": [run_id] * len(models),
                "role": list(models), "backend": [cfg.get("operator") for _, cfg in models.values()],
                "model_id": [cfg.get("model") for _, cfg in models.values()],
                "revision": [cfg.get("revision") for _, cfg in models.values()],
                "config": [json.dumps(cfg, default=str) for _, cfg in models.values()],
            })

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        self.con.execute(
            "UPDATE runs SET status = 'finished', finished_at = ?, summary = ? WHERE run_id = ?",
            [now(), json.dumps(summary), run_id],
        )

    def planned_shards(self, run_id: str) -> list[tuple[str, list[str]]]:
        """The run's shards not yet committed, in plan order."""
        return [(r[0], list(r[1])) for r in self.con.execute(
            "SELECT shard_id, dialogue_keys FROM shards WHERE run_id = ? AND status = 'planned' ORDER BY position",
            [run_id],
        ).fetchall()]

    def committed_dialogue_keys(self) -> set[str]:
        return {row[0] for row in self.con.execute("SELECT dialogue_key FROM dialogues").fetchall()}

    def committed_dialogues(self) -> dict[str, Committed]:
        rows = self.con.execute("SELECT dialogue_key, dialogue_id, seed_key FROM dialogues").fetchall()
        return {key: Committed(dialogue_id, seed_key) for key, dialogue_id, seed_key in rows}

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

    def latest_candidates(self) -> list[tuple[str, str]]:
        """(dialogue id, dialogue key) of every dialogue the latest version considered, accepted or not."""
        return [tuple(row) for row in self.con.execute(
            """SELECT dialogue_id, dialogue_key FROM version_dialogues
               WHERE version = (SELECT max(version) FROM versions) ORDER BY dialogue_id""").fetchall()]

    def previous_job_spec(self) -> dict[str, Any] | None:
        rows = self.con.execute("SELECT job_spec FROM runs WHERE kind = 'run' AND status = 'finished' "
                                "ORDER BY started_at DESC LIMIT 1").fetchall()
        return json.loads(rows[0][0]) if rows else None

    def scored_under_other_config(self, dialogue_keys: Sequence[str], scoring_key: str) -> list[str]:
        """Dialogues whose latest scores came from a run with another scoring config."""
        return [row[0] for row in self.con.execute(
            """SELECT ts.dialogue_key FROM turn_scores ts JOIN runs r USING (run_id)
               WHERE ts.dialogue_key IN (SELECT unnest(?::VARCHAR[]))
               GROUP BY ts.dialogue_key HAVING arg_max(r.scoring_key, r.started_at) IS DISTINCT FROM ?
               ORDER BY ts.dialogue_key""", [list(dialogue_keys), scoring_key]).fetchall()]

    def kept_drafts(self, dialogue_keys: Sequence[str]) -> list[KeptDraft]:
        """The kept draft of every stage of every turn, with what the scorers saw beside it."""
        rows = self.con.execute(
            """WITH kept AS (SELECT * FROM drafts WHERE best AND dialogue_key IN (SELECT unnest(?::VARCHAR[])))
               SELECT k.draft_key, k.dialogue_key, k.turn_index, k.stage, q.text, a.text,
                      CASE k.stage WHEN 'answer' THEN a.caption WHEN 'image' THEN k.text END, k.image_key,
                      coalesce((SELECT list([t.question, t.answer] ORDER BY t.turn_index) FROM turns t
                                WHERE t.dialogue_key = k.dialogue_key AND t.turn_index < k.turn_index), [])
               FROM kept k
               JOIN kept q ON q.dialogue_key = k.dialogue_key AND q.turn_index = k.turn_index AND q.stage = 'question'
               JOIN kept a ON a.dialogue_key = k.dialogue_key AND a.turn_index = k.turn_index AND a.stage = 'answer'
               JOIN turns t ON t.dialogue_key = k.dialogue_key AND t.turn_index = k.turn_index
               ORDER BY k.dialogue_key, k.turn_index, k.stage""", [list(dialogue_keys)]).fetchall()
        return [KeptDraft(*row[:8], history=[(q, a) for q, a in row[8]]) for row in rows]

    def commit_rescore(self, run_id: str, draft_scores: Sequence[tuple[str, str, Sequence[Score]]],
                       turn_scores: Mapping[tuple[str, int], Mapping[str, float]], ledger: Ledger,
                       image_path: Any) -> None:
        """New scores of kept drafts and the turns' new final scores, with the calls that made them."""
        scores = [(draft, dialogue, s) for draft, dialogue, found in draft_scores for s in found]
        with self.transaction():
            self._insert_scores(run_id, scores)
            self.insert_turn_scores(run_id, [(key, index, values) for (key, index), values in turn_scores.items()])
            self._insert_ledger(run_id, None, ledger, image_path, now())

    def missing_embeddings(self, dialogue_keys: Sequence[str], embed_key: str) -> list[tuple[str, str]]:
        """(dialogue key, dialogue text) of dialogues without an embedding under ``embed_key``. Rejected ones are
        embedded too, so new thresholds that accept them need no model call."""
        return [tuple(row) for row in self.con.execute(
            f"""SELECT d.dialogue_key, {_DIALOGUE_TEXT} FROM dialogues d
                WHERE d.dialogue_key IN (SELECT unnest(?::VARCHAR[]))
                  AND NOT EXISTS (SELECT 1 FROM dialogue_embeddings e
                                  WHERE e.dialogue_key = d.dialogue_key AND e.embed_key = ?)
                ORDER BY d.dialogue_key""", [list(dialogue_keys), embed_key]).fetchall()]

    def commit_calls(self, run_id: str, ledger: Ledger, image_path: Any) -> None:
        """Calls made outside any shard (judge evaluation, dialogue embeddings)."""
        with self.transaction():
            self._insert_ledger(run_id, None, ledger, image_path, now())

    def commit_embeddings(self, run_id: str, embed_key: str, vectors: Sequence[tuple[str, list[float]]],
                          ledger: Ledger, image_path: Any) -> None:
        with self.transaction():
            self._insert("dialogue_embeddings", {
                "dialogue_key": [k for k, _ in vectors], "embed_key": [embed_key] * len(vectors),
                "vector": [list(map(float, v)) for _, v in vectors], "run_id": [run_id] * len(vectors),
            })
            self._insert_ledger(run_id, None, ledger, image_path, now())

    def dedup_candidates(self, dialogue_keys: Sequence[str], embed_key: str) -> list[DedupRow]:
        """Accepted dialogues among ``dialogue_keys``, as the dedup pass sees them. ``order`` ranks the earliest
        made first, so on equal scores the dialogue that existed first is kept."""
        rows = self.con.execute(
            f"""SELECT d.dialogue_id, {_DIALOGUE_TEXT},
                       coalesce((SELECT avg(x) FROM turn_final_scores f,
                                 unnest([f.text_content, f.image_content, f.image_quality, f.image_text_synergy])
                                 AS u(x) WHERE f.dialogue_key = d.dialogue_key), 0),
                       row_number() OVER (ORDER BY d.created_at, d.dialogue_id) - 1,
                       coalesce((SELECT list(t.image_key ORDER BY t.turn_index) FILTER (WHERE t.image_key IS NOT NULL)
                                 FROM turns t WHERE t.dialogue_key = d.dialogue_key), []),
                       (SELECT any_value(e.vector) FROM dialogue_embeddings e
                        WHERE e.dialogue_key = d.dialogue_key AND e.embed_key = ?)
                FROM dialogues d JOIN latest_decisions ld USING (dialogue_key)
                WHERE ld.accepted AND d.dialogue_key IN (SELECT unnest(?::VARCHAR[]))
                ORDER BY d.dialogue_id""", [embed_key, list(dialogue_keys)]).fetchall()
        return [DedupRow(*row) for row in rows]

    def record_dedup(self, run_id: str, decisions: Sequence[Any]) -> None:
        """This run's dedup decisions, replacing any it wrote before being interrupted."""
        with self.transaction():
            self.con.execute("DELETE FROM dedup WHERE run_id = ?", [run_id])
            self._insert("dedup", {
                "run_id": [run_id] * len(decisions), "dropped_id": [d.dropped_id for d in decisions],
                "kept_id": [d.kept_id for d in decisions], "matched_id": [d.matched_id for d in decisions],
                "method": [d.method for d in decisions], "similarity": [d.similarity for d in decisions],
                "created_at": [now()] * len(decisions),
            })

    # -- call cache -----------------------------------------------------------------------------------------------
    def answered(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        if not keys:
            return {}
        rows = self.con.execute(
            "SELECT call_key, output FROM call_outputs WHERE call_key IN (SELECT unnest(?::VARCHAR[]))", [keys]
        ).fetchall()
        return {key: json.loads(output) for key, output in rows}

    # -- committing a shard ---------------------------------------------------------------------------------------
    def commit_shard(self, run_id: str, shard_id: str, dialogues: Sequence[Dialogue], ledger: Ledger,
                     generation_key: str, image_path: Any) -> bool:
        """Write everything a shard produced in one transaction. Returns False (writing nothing) if the shard was
        already committed, which is what makes a commit exactly-once."""
        with self.transaction():
            status = self.con.execute("SELECT status FROM shards WHERE shard_id = ?", [shard_id]).fetchall()
            if not status:
                raise StoreError(f"shard {shard_id} was never planned")
            if status[0][0] == "committed":
                return False
            stamp = now()
            self._insert_dialogues(run_id, shard_id, dialogues, generation_key, image_path, stamp)
            self._insert_ledger(run_id, shard_id, ledger, image_path, stamp)
            self.con.execute("UPDATE shards SET status = 'committed', committed_at = ? WHERE shard_id = ?",
                             [stamp, shard_id])
        return True

    def _insert_dialogues(self, run_id: str, shard_id: str, dialogues: Sequence[Dialogue], generation_key: str,
                          image_path: Any, stamp: datetime) -> None:
        self._insert("dialogues", {
            "dialogue_key": [d.dialogue_key for d in dialogues], "dialogue_id": [d.dialogue_id for d in dialogues],
            "seed_key": [d.seed.seed_key for d in dialogues], "generation_key": [generation_key] * len(dialogues),
            "run_id": [run_id] * len(dialogues), "shard_id": [shard_id] * len(dialogues),
            "n_turns": [len(d.turns) for d in dialogues], "failure": [d.failure for d in dialogues],
            "messages": [json.dumps(d.messages(image_path)) for d in dialogues],
            "created_at": [stamp] * len(dialogues),
        })
        turns = [(d, t) for d in dialogues for t in d.turns]
        self._insert("turns", {
            "dialogue_key": [d.dialogue_key for d, _ in turns], "turn_index": [t.index for _, t in turns],
            "question": [t.question for _, t in turns], "answer": [t.answer for _, t in turns],
            "caption": [t.caption for _, t in turns], "image_key": [t.image_key for _, t in turns],
            "run_id": [run_id] * len(turns),
        })
        self.insert_turn_scores(run_id, [(d.dialogue_key, t.index, t.scores) for d, t in turns])
        drafts = [draft for d in dialogues for draft in d.drafts]
        self._insert("drafts", {
            "draft_key": [x.draft_key for x in drafts], "dialogue_key": [x.dialogue_key for x in drafts],
            "turn_index": [x.turn_index for x in drafts], "stage": [x.stage.value for x in drafts],
            "round": [x.round for x in drafts], "text": [x.text for x in drafts],
            "caption": [x.caption for x in drafts], "image_key": [x.image_key for x in drafts],
            "ok": [x.ok for x in drafts], "reason": [x.reason for x in drafts],
            "critique": [x.critique for x in drafts], "passed": [x.passed for x in drafts],
            "best": [x.best for x in drafts], "call_keys": [x.call_keys for x in drafts],
            "run_id": [run_id] * len(drafts),
        })
        self._insert_scores(run_id, [(x.draft_key, x.dialogue_key, s) for x in drafts for s in x.scores])

    def _insert_scores(self, run_id: str, scores: Sequence[tuple[str, str, Score]]) -> None:
        self._insert("scores", {
            "draft_key": [d for d, _, _ in scores], "dialogue_key": [k for _, k, _ in scores],
            "dimension": [s.dimension for _, _, s in scores], "scorer": [s.scorer for _, _, s in scores],
            "value": [s.value for _, _, s in scores], "model_id": [s.model_id for _, _, s in scores],
            "raw": [json.dumps(s.raw) for _, _, s in scores], "run_id": [run_id] * len(scores),
        })

    def redecide(self, run_id: str, dialogue_keys: Sequence[str], thresholds: Mapping[str, float]) -> None:
        """Decide acceptance of ``dialogue_keys`` under ``thresholds`` from their final scores; a dialogue whose
        decision changed (or that had none) gets a new decision row from ``run_id``."""
        self.con.execute("CREATE OR REPLACE TEMP TABLE deciding AS SELECT unnest(?::VARCHAR[]) AS dialogue_key",
                         [list(dialogue_keys)])
        rows = self.con.execute("""
            SELECT d.dialogue_key, d.failure,
                   list(t ORDER BY t.turn_index) FILTER (WHERE t.turn_index IS NOT NULL),
                   ld.accepted, ld.reason
            FROM deciding JOIN dialogues d USING (dialogue_key)
            LEFT JOIN turn_final_scores t USING (dialogue_key)
            LEFT JOIN latest_decisions ld USING (dialogue_key)
            GROUP BY ALL""").fetchall()
        changed = []
        for key, failure, turns, was_accepted, was_reason in rows:
            scores = [{k: v for k, v in t.items() if k not in ("dialogue_key", "turn_index") and v is not None}
                      for t in turns or []]
            decision = decide(failure or "", scores, thresholds)
            if (decision.accepted, decision.reason) != (was_accepted, was_reason):
                changed.append((key, decision))
        with self.transaction():
            self._insert("decisions", {
                "dialogue_key": [k for k, _ in changed], "run_id": [run_id] * len(changed),
                "accepted": [d.accepted for _, d in changed], "reason": [d.reason for _, d in changed],
                "turns_accepted": [list(d.turns_accepted) for _, d in changed], "decided_at": [now()] * len(changed),
            })

    def insert_turn_scores(self, run_id: str, turns: Sequence[tuple[str, int, dict[str, float]]]) -> None:
        """(dialogue key, turn index, combined score per dimension) as scored by ``run_id``."""
        rows = [(key, index, dim, value) for key, index, scores in turns for dim, value in scores.items()]
        self._insert("turn_scores", {
            "dialogue_key": [r[0] for r in rows], "turn_index": [r[1] for r in rows],
            "dimension": [r[2] for r in rows], "value": [r[3] for r in rows], "run_id": [run_id] * len(rows),
        })

    def _insert_ledger(self, run_id: str, shard_id: str | None, ledger: Ledger, image_path: Any,
                       stamp: datetime) -> None:
        calls = ledger.calls
        self._insert("model_calls", {
            "call_key": [c.call_key for c in calls], "run_id": [run_id] * len(calls),
            "shard_id": [shard_id] * len(calls), "role": [c.role for c in calls],
            "method": [c.method for c in calls], "model_id": [c.model_id for c in calls],
            "revision": [c.revision for c in calls], "tokens_in": [c.tokens_in for c in calls],
            "tokens_out": [c.tokens_out for c in calls], "latency_ms": [c.latency_ms for c in calls],
            "batch_id": [c.batch_id for c in calls], "batch_size": [c.batch_size for c in calls],
            "cached": [c.cached for c in calls], "error": [c.output.get("error") for c in calls],
            "created_at": [stamp] * len(calls),
        })
        # Cached answers too: one that a shared cache gave must stay answerable by this output alone.
        answered = {c.call_key: c for c in calls if "error" not in c.output}
        self._insert("call_outputs", {
            "call_key": list(answered), "request": [json.dumps(c.request) for c in answered.values()],
            "output": [json.dumps(c.output) for c in answered.values()],
        }, on_conflict_ignore=True)
        images = list(ledger.images.values())
        self._insert("images", {
            "image_key": [i.key for i in images], "path": [image_path(i.key) for i in images],
            "width": [i.width for i in images], "height": [i.height for i in images],
            "bytes": [len(i.png) for i in images], "run_id": [run_id] * len(images),
        }, on_conflict_ignore=True)

    # -- helpers ----------------------------------------------------------------------------------------------------
    def transaction(self) -> _Transaction:
        return _Transaction(self.con)

    def _insert(self, table: str, columns: dict[str, list[Any]], on_conflict_ignore: bool = False) -> None:
        if next(iter(columns.values()), []):
            self.insert_arrow(table, pa.table(columns), on_conflict_ignore)

    def insert_arrow(self, table: str, incoming_rows: pa.Table, on_conflict_ignore: bool = False) -> None:
        """Columns matched by name; DuckDB reads ``incoming_rows`` by a replacement scan of this frame."""
        verb = "INSERT OR IGNORE INTO" if on_conflict_ignore else "INSERT INTO"
        self.con.execute(f"{verb} {table} BY NAME SELECT * FROM incoming_rows")


class _Transaction:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def __enter__(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")
