"""Dataset versions: each run, refresh or rescore writes a new version of the output folder.

``versions/v0001/`` holds ``manifest.json`` (the accepted dialogue ids and content keys, the job spec and its key,
the engine version), ``accepted.parquet`` (messages in the chat-template convention, final scores per turn) and
``rejected.parquet`` (with the reason). Images live once, content-addressed, under ``images/``. Earlier versions
stay as they were; ``versions/LATEST`` names the newest. Writing a version is idempotent per run: a run killed
while writing it writes the same version again when resumed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seir.engine.failpoints import failpoint
from seir.engine.store.base import now
from seir.engine.store.provenance import ProvenanceStore
from seir.engine.store.schema import turn_scores_sql

# The chat-template shape of the exported messages, so Parquet readers see nested columns, not JSON text.
MESSAGES_TYPE = '[{"role": "VARCHAR", "content": [{"type": "VARCHAR", "text": "VARCHAR", "image": "VARCHAR"}]}]'


@dataclass(frozen=True)
class Version:
    number: int
    path: Path
    accepted: int
    rejected: int


def version_name(number: int) -> str:
    return f"v{number:04d}"


def write_version(store: ProvenanceStore, out_dir: Path, run_id: str, kind: str, job_key: str,
                  job_spec: dict[str, Any], engine_version: str, dialogue_keys: list[str],
                  partial: bool = False) -> Version:
    """Freeze the dataset as ``dialogue_keys`` (one per current seed), each accepted unless its latest decision
    or this run's dedup says otherwise. Call it inside ``store.held()``: its temp tables live as long as the
    connection."""
    con = store.con
    existing = con.execute("SELECT version FROM versions WHERE run_id = ?", [run_id]).fetchall()
    number = existing[0][0] if existing else con.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM versions").fetchall()[0][0]
    folder = out_dir / "versions" / version_name(number)
    folder.mkdir(parents=True, exist_ok=True)
    con.execute("CREATE OR REPLACE TEMP TABLE version_keys AS SELECT unnest(?::VARCHAR[]) AS dialogue_key",
                [dialogue_keys])
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE version_rows AS
        SELECT d.dialogue_id, d.dialogue_key, ld.accepted AND dd.dropped_id IS NULL AS accepted,
               CASE WHEN dd.dropped_id IS NOT NULL
                    THEN 'duplicate of ' || dd.matched_id || ' (' || dd.method || ', similarity '
                         || round(dd.similarity, 3) || '), kept ' || dd.kept_id
                    ELSE ld.reason END AS reason,
               d.messages, d.run_id
        FROM version_keys
        JOIN dialogues d USING (dialogue_key)
        JOIN latest_decisions ld USING (dialogue_key)
        LEFT JOIN dedup dd ON dd.run_id = ? AND dd.dropped_id = d.dialogue_id
        """,
        [run_id],
    )
    scores = f"""(SELECT list({turn_scores_sql("t")} ORDER BY t.turn_index)
                  FROM turn_final_scores t WHERE t.dialogue_key = v.dialogue_key)"""
    for name, accepted in (("accepted", True), ("rejected", False)):
        _copy_atomic(con, f"""
            SELECT dialogue_id, dialogue_key, from_json(messages, '{MESSAGES_TYPE}') AS messages,
                   {scores} AS scores, reason, run_id AS generated_by
            FROM version_rows v WHERE accepted = {accepted} ORDER BY dialogue_id""", folder / f"{name}.parquet")
    accepted_rows = con.execute(
        "SELECT dialogue_id, dialogue_key FROM version_rows WHERE accepted ORDER BY dialogue_id").fetchall()
    rejected = con.execute("SELECT count(*) FROM version_rows WHERE NOT accepted").fetchall()[0][0]
    manifest = {
        "version": number, "run_id": run_id, "kind": kind, "created_at": now().isoformat(), "job_key": job_key,
        "engine_version": engine_version, "job_spec": job_spec, "partial": partial,
        "dialogues": [{"dialogue_id": i, "dialogue_key": k} for i, k in accepted_rows],
    }
    _write_atomic(folder / "manifest.json", json.dumps(manifest, indent=1, default=str))
    if not existing:
        with store.transaction():
            con.execute("INSERT INTO versions BY NAME SELECT ? AS version, ? AS run_id, ? AS created_at, "
                        "? AS job_key, ? AS engine_version, ? AS n_dialogues, ? AS path, ? AS kind, ? AS partial",
                        [number, run_id, now(), job_key, engine_version, len(accepted_rows), str(folder), kind,
                         partial])
            con.execute("INSERT INTO version_dialogues BY NAME SELECT ? AS version, dialogue_id, dialogue_key, "
                        "accepted FROM version_rows", [number])
    failpoint("version-row")
    _write_atomic(out_dir / "versions" / "LATEST", version_name(number) + "\n")
    return Version(number, folder, len(accepted_rows), rejected)


def _copy_atomic(con: Any, query: str, target: Path) -> None:
    temp = target.with_name(f".{target.name}.tmp")
    quoted = str(temp).replace("'", "''")
    con.execute(f"COPY ({query}) TO '{quoted}' (FORMAT parquet)")
    temp.replace(target)


def _write_atomic(target: Path, text: str) -> None:
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    temp.replace(target)
