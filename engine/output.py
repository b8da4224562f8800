"""Dataset versions: each run or refresh writes a new version of the output folder.

``versions/v0001/`` holds ``manifest.json`` (the accepted dialogue ids and content keys, the job spec and its key,
the engine version), ``accepted.parquet`` (messages in the chat-template convention, scores per turn) and
``rejected.parquet`` (with the reason). Images live once, content-addressed, under ``images/``. Earlier versions
stay as they were; ``versions/LATEST`` names the newest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seir.engine.store import ProvenanceStore, now

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


def write_version(store: ProvenanceStore, out_dir: Path, run_id: str, job_key: str, job_spec: dict[str, Any],
                  engine_version: str, seed_keys: list[str]) -> Version:
    """Freeze what the dataset is now: for every current seed, its newest dialogue under this run's generation
    config, accepted unless a threshold or a dedup decision says otherwise."""
    con = store.con
    number = (con.execute("SELECT coalesce(max(version), 0) FROM versions").fetchone()[0]) + 1
    folder = out_dir / "versions" / version_name(number)
    folder.mkdir(parents=True, exist_ok=True)
    con.execute("CREATE OR REPLACE TEMP TABLE current_seeds AS SELECT unnest(?::VARCHAR[]) AS seed_key", [seed_keys])
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE version_rows AS
        SELECT d.dialogue_id, d.dialogue_key, d.seed_key, d.accepted AND dd.dropped_id IS NULL AS accepted,
               CASE WHEN dd.dropped_id IS NOT NULL
                    THEN 'duplicate of ' || dd.kept_id || ' (' || dd.method || ', similarity '
                         || round(dd.similarity, 3) || ')'
                    ELSE d.reason END AS reason,
               d.messages, d.run_id
        FROM dialogues d
        JOIN runs r ON r.run_id = ?
        JOIN current_seeds USING (seed_key)
        LEFT JOIN (SELECT dropped_id, any_value(kept_id) AS kept_id, any_value(method) AS method,
                          max(similarity) AS similarity
                   FROM dedup WHERE run_id = ? GROUP BY dropped_id) dd ON dd.dropped_id = d.dialogue_id
        WHERE d.generation_key = r.generation_key
        """,
        [run_id, run_id],
    )
    scores = """(SELECT list({'turn': turn_index, 'text_content': text_content, 'image_content': image_content,
                      'image_quality': image_quality, 'image_text_synergy': image_text_synergy}
                      ORDER BY turn_index) FROM turns t WHERE t.dialogue_key = v.dialogue_key)"""
    for name, accepted in (("accepted", True), ("rejected", False)):
        _copy_atomic(con, f"""
            SELECT dialogue_id, dialogue_key, from_json(messages, '{MESSAGES_TYPE}') AS messages,
                   {scores} AS scores, reason, run_id
            FROM version_rows v WHERE accepted = {accepted} ORDER BY dialogue_id""", folder / f"{name}.parquet")
    accepted_rows = con.execute(
        "SELECT dialogue_id, dialogue_key FROM version_rows WHERE accepted ORDER BY dialogue_id").fetchall()
    rejected = con.execute("SELECT count(*) FROM version_rows WHERE NOT accepted").fetchone()[0]
    manifest = {
        "version": number, "run_id": run_id, "created_at": now().isoformat(), "job_key": job_key,
        "engine_version": engine_version, "job_spec": job_spec,
        "dialogues": [{"dialogue_id": i, "dialogue_key": k} for i, k in accepted_rows],
    }
    _write_atomic(folder / "manifest.json", json.dumps(manifest, indent=1, default=str))
    with store.transaction():
        con.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [number, run_id, now(), job_key, engine_version, len(accepted_rows), str(folder)])
        con.execute("INSERT INTO version_dialogues SELECT ?, dialogue_id, dialogue_key FROM version_rows "
                    "WHERE accepted", [number])
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
