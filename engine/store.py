"""The provenance store: one DuckDB file per output folder, written by one process only.

Workers never open it: the driver's committer ingests a whole shard (dialogues, turns, drafts, scores, images,
model calls) in one transaction and marks the shard committed, so a shard is committed exactly once. Every row
carries the run that produced it and the content key of what produced it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from seir.engine.calls import Ledger
from seir.engine.errors import SeirError
from seir.engine.records import Dialogue, Quarantined, Seed

SCHEMA_VERSION = 1

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, kind VARCHAR, job_name VARCHAR, job_key VARCHAR, generation_key VARCHAR,
    job_spec JSON, engine_version VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, status VARCHAR,
    summary JSON);
CREATE TABLE IF NOT EXISTS models (
    model_key VARCHAR, run_id VARCHAR, role VARCHAR, backend VARCHAR, model_id VARCHAR, revision VARCHAR,
    config JSON);
CREATE TABLE IF NOT EXISTS seeds (
    seed_key VARCHAR, seed_id VARCHAR, source VARCHAR, text VARCHAR, topic VARCHAR, template VARCHAR,
    images VARCHAR[], turns INTEGER, run_id VARCHAR);
CREATE TABLE IF NOT EXISTS shards (
    shard_id VARCHAR PRIMARY KEY, run_id VARCHAR, position INTEGER, dialogue_keys VARCHAR[], status VARCHAR,
    committed_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS dialogues (
    dialogue_key VARCHAR, dialogue_id VARCHAR, seed_key VARCHAR, generation_key VARCHAR, run_id VARCHAR,
    shard_id VARCHAR, accepted BOOLEAN, reason VARCHAR, n_turns INTEGER, messages JSON, created_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS turns (
    dialogue_key VARCHAR, turn_index INTEGER, question VARCHAR, answer VARCHAR, caption VARCHAR,
    image_key VARCHAR, text_content DOUBLE, image_content DOUBLE, image_quality DOUBLE,
    image_text_synergy DOUBLE, question_score DOUBLE, accepted BOOLEAN, failing VARCHAR[], run_id VARCHAR);
CREATE TABLE IF NOT EXISTS drafts (
    draft_key VARCHAR, dialogue_key VARCHAR, turn_index INTEGER, stage VARCHAR, round INTEGER, text VARCHAR,
    caption VARCHAR, image_key VARCHAR, ok BOOLEAN, reason VARCHAR, critique VARCHAR, passed BOOLEAN,
    best BOOLEAN, call_keys VARCHAR[], run_id VARCHAR);
CREATE TABLE IF NOT EXISTS scores (
    draft_key VARCHAR, dialogue_key VARCHAR, dimension VARCHAR, scorer VARCHAR, value DOUBLE, model_id VARCHAR,
    raw JSON, run_id VARCHAR);
CREATE TABLE IF NOT EXISTS images (
    image_key VARCHAR PRIMARY KEY, path VARCHAR, width INTEGER, height INTEGER, bytes BIGINT, run_id VARCHAR);
CREATE TABLE IF NOT EXISTS model_calls (
    call_key VARCHAR, run_id VARCHAR, shard_id VARCHAR, role VARCHAR, method VARCHAR, model_id VARCHAR,
    revision VARCHAR, tokens_in INTEGER, tokens_out INTEGER, latency_ms DOUBLE, batch_id VARCHAR,
    batch_size INTEGER, cached BOOLEAN, error VARCHAR, created_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS call_outputs (call_key VARCHAR PRIMARY KEY, request JSON, output JSON);
CREATE TABLE IF NOT EXISTS quarantine (
    run_id VARCHAR, source VARCHAR, line INTEGER, field VARCHAR, reason VARCHAR, raw VARCHAR);
CREATE TABLE IF NOT EXISTS dedup (
    run_id VARCHAR, dropped_id VARCHAR, kept_id VARCHAR, method VARCHAR, similarity DOUBLE,
    created_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY, run_id VARCHAR, created_at TIMESTAMPTZ, job_key VARCHAR,
    engine_version VARCHAR, n_dialogues INTEGER, path VARCHAR);
CREATE TABLE IF NOT EXISTS version_dialogues (version INTEGER, dialogue_id VARCHAR, dialogue_key VARCHAR);
"""

TURN_SCORE_COLUMNS = {
    "text_content": "text_content",
    "image_content": "image_content",
    "image_quality": "image_quality",
    "image_text_synergy": "image_text_synergy",
    "question": "question_score",
}


class StoreError(SeirError):
    pass


def now() -> datetime:
    return datetime.now(timezone.utc)



class ProvenanceStore:
    FILENAME = "provenance.duckdb"

    def __init__(self, out_dir: Path, read_only: bool = False) -> None:
        self.path = Path(out_dir) / self.FILENAME
        if read_only and not self.path.exists():
            raise StoreError(f"no provenance database at {self.path}: run `seir run JOB --out {out_dir}` first")
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
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
        self.con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        found = self._stored_version()
        if found is None:
            self.con.execute("BEGIN")
            self.con.execute(_TABLES)
            self.con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
            self.con.execute("COMMIT")
        self._check_version()

    def _stored_version(self) -> int | None:
        row = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else None

    def _check_version(self) -> None:
        found = self._stored_version()
        if found != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has provenance schema v{found}, this seir reads v{SCHEMA_VERSION}: "
                + ("upgrade seir to read it." if (found or 0) > SCHEMA_VERSION else "it cannot be migrated.")
            )

    # -- runs -----------------------------------------------------------------------------------------------------
    def unfinished_run(self, kind: str, job_key: str) -> str | None:
        row = self.con.execute(
            "SELECT run_id FROM runs WHERE kind = ? AND job_key = ? AND status = 'running' ORDER BY started_at DESC",
            [kind, job_key],
        ).fetchone()
        return row[0] if row else None

    def begin_run(self, run_id: str, kind: str, job_name: str, job_key: str, generation_key: str,
                  job_spec: dict[str, Any], engine_version: str, seeds: Sequence[Seed],
                  quarantined: Sequence[Quarantined], plan: Sequence[tuple[str, list[str]]]) -> None:
        """Record a new run, its new seeds, its quarantined input and its planned shards, all at once."""
        with self.transaction():
            self.con.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 'running', NULL)",
                [run_id, kind, job_name, job_key, generation_key, json.dumps(job_spec), engine_version, now()],
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

    def quarantine_count(self, run_id: str) -> int:
        return self.con.execute("SELECT count(*) FROM quarantine WHERE run_id = ?", [run_id]).fetchone()[0]

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
            status = self.con.execute("SELECT status FROM shards WHERE shard_id = ?", [shard_id]).fetchone()
            if status is None:
                raise StoreError(f"shard {shard_id} was never planned")
            if status[0] == "committed":
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
            "accepted": [d.accepted for d in dialogues], "reason": [d.reason for d in dialogues],
            "n_turns": [len(d.turns) for d in dialogues],
            "messages": [json.dumps(d.messages(image_path)) for d in dialogues],
            "created_at": [stamp] * len(dialogues),
        })
        turns = [(d, t) for d in dialogues for t in d.turns]
        columns: dict[str, list[Any]] = {
            "dialogue_key": [d.dialogue_key for d, _ in turns], "turn_index": [t.index for _, t in turns],
            "question": [t.question for _, t in turns], "answer": [t.answer for _, t in turns],
            "caption": [t.caption for _, t in turns], "image_key": [t.image_key for _, t in turns],
            "accepted": [t.accepted for _, t in turns], "failing": [t.failing for _, t in turns],
            "run_id": [run_id] * len(turns),
        }
        for dimension, column in TURN_SCORE_COLUMNS.items():
            columns[column] = [t.scores.get(dimension) for _, t in turns]
        self._insert("turns", columns)
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
        scores = [(x, s) for x in drafts for s in x.scores]
        self._insert("scores", {
            "draft_key": [x.draft_key for x, _ in scores], "dialogue_key": [x.dialogue_key for x, _ in scores],
            "dimension": [s.dimension for _, s in scores], "scorer": [s.scorer for _, s in scores],
            "value": [s.value for _, s in scores], "model_id": [s.model_id for _, s in scores],
            "raw": [json.dumps(s.raw) for _, s in scores], "run_id": [run_id] * len(scores),
        })

    def _insert_ledger(self, run_id: str, shard_id: str, ledger: Ledger, image_path: Any, stamp: datetime) -> None:
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
        answered = {c.call_key: c for c in calls if not c.cached and "error" not in c.output}
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
        if not next(iter(columns.values()), []):
            return
        incoming_rows = pa.table(columns)  # noqa: F841 (DuckDB reads it by name: a replacement scan of this frame)
        verb = "INSERT OR IGNORE INTO" if on_conflict_ignore else "INSERT INTO"
        self.con.execute(f"{verb} {table} BY NAME SELECT * FROM incoming_rows")

    def insert_rows(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if rows:
            self._insert(table, {name: [row[name] for row in rows] for name in rows[0]})


class _Transaction:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def __enter__(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")
