"""Dataset versions: each run, refresh or rescore writes a new version of the output folder.

``versions/v0001/`` holds ``manifest.json`` (the accepted dialogue ids and content keys, the job spec and its key,
the engine version), ``accepted.parquet`` (messages in the chat-template convention, final scores per turn) and
``rejected.parquet`` (with the reason). Images live once, content-addressed, under ``images/``. Earlier versions
stay as they were; ``versions/LATEST`` names the newest. Writing a version is idempotent per run: a run killed
while writing it writes the same version again when resumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seir.engine.errors import writing
from seir.engine.failpoints import failpoint
from seir.engine.keys import file_key
from seir.engine.store.base import now, pages
from seir.engine.store.files import folder_whole, write_whole
from seir.engine.store.provenance import ProvenanceStore
from seir.engine.store.schema import VERSION_ROWS, turn_scores_sql

MANIFEST = "manifest.json"
MANIFEST_ROWS = 65536
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
                  job_spec: dict[str, Any], engine_version: str, partial: bool = False) -> Version:
    """Freeze the dataset as the run's dialogues (one per current seed), each accepted unless its latest decision
    or this run's dedup says otherwise. Call it inside ``store.held()``.

    The folder is written beside its place and renamed into it when whole, then recorded in ``versions``, then named
    by ``LATEST``: a run stopped anywhere in between (killed, a full disk) leaves either no version or a whole one, and
    writes the same version again when resumed."""
    con = store.con
    existing = con.execute("SELECT version FROM versions WHERE run_id = ?", [run_id]).fetchall()
    number = existing[0][0] if existing else con.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM versions").fetchall()[0][0]
    folder = out_dir / "versions" / version_name(number)
    with writing(out_dir / "versions", f"version {version_name(number)}"):
        accepted, rejected = _write_folder(con, folder, run_id, {
            "version": number, "run_id": run_id, "kind": kind, "created_at": now().isoformat(), "job_key": job_key,
            "engine_version": engine_version, "job_spec": job_spec, "partial": partial,
        })
    if not existing:
        with store.transaction():
            con.execute("INSERT INTO versions BY NAME SELECT ? AS version, ? AS run_id, ? AS created_at, "
                        "? AS job_key, ? AS engine_version, ? AS n_dialogues, ? AS path, ? AS kind, ? AS partial",
                        [number, run_id, now(), job_key, engine_version, accepted, str(folder), kind,
                         partial])
            con.execute("INSERT INTO version_dialogues BY NAME SELECT ? AS version, dialogue_id, dialogue_key, "
                        "accepted FROM version_rows", [number])
    failpoint("version-row")
    with writing(out_dir / "versions", "versions/LATEST"):
        write_whole(out_dir / "versions" / "LATEST", version_name(number) + "\n")
    return Version(number, folder, accepted, rejected)


def _write_folder(con: Any, folder: Path, run_id: str, manifest: dict[str, Any]) -> tuple[int, int]:
    """The version's files into ``folder``, replacing what an interrupted attempt left there; returns how many
    dialogues are accepted and rejected. The manifest lists each Parquet file's size and content key, which
    ``seir check`` verifies."""
    with folder_whole(folder, folder.with_name(f".{folder.name}.partial"), replace=True) as partial:
        # replace: what an interrupted attempt at this same version left in its place was never recorded
        con.execute(f"CREATE OR REPLACE TEMP TABLE version_rows AS {VERSION_ROWS}", {"run": run_id})
        scores = f"""(SELECT list({turn_scores_sql("t")} ORDER BY t.turn_index)
                      FROM turn_final_scores t WHERE t.dialogue_key = v.dialogue_key)"""
        files = []
        for name, accepted in (("accepted", True), ("rejected", False)):
            target = partial / f"{name}.parquet"
            quoted = str(target).replace("'", "''")
            con.execute(f"""COPY (
                SELECT dialogue_id, dialogue_key, from_json(messages, '{MESSAGES_TYPE}') AS messages,
                       {scores} AS scores, reason, run_id AS generated_by
                FROM version_rows v WHERE accepted = {accepted} ORDER BY dialogue_id) TO '{quoted}' (FORMAT parquet)""")
            files.append({"path": target.name, "bytes": target.stat().st_size, "xxh3_128": file_key(target)})
        accepted, rejected = con.execute("SELECT count(*) FILTER (WHERE accepted), "
                                         "count(*) FILTER (WHERE NOT accepted) FROM version_rows").fetchall()[0]
        _write_manifest(con, partial / MANIFEST, {**manifest, "files": files})
    return accepted, rejected


def _write_manifest(con: Any, target: Path, manifest: dict[str, Any]) -> None:
    """``manifest`` plus its ``dialogues`` list (every accepted dialogue's id and key), written a page at a time so a
    version of millions of dialogues is never held whole."""
    with target.open("w", encoding="utf-8") as out:
        head = json.dumps({**manifest, "dialogues": []}, indent=1, default=str)
        out.write(head[: head.rindex("[") + 1])
        first = True
        for page in pages(con, "SELECT dialogue_id, dialogue_key FROM version_rows WHERE accepted", "dialogue_id",
                          MANIFEST_ROWS):
            for dialogue_id, key in zip(page.column(0).to_pylist(), page.column(1).to_pylist(), strict=True):
                out.write(("\n" if first else ",\n") + json.dumps({"dialogue_id": dialogue_id, "dialogue_key": key}))
                first = False
        out.write("\n]\n}\n")


def read_manifest(path: Path) -> tuple[dict[str, Any], int]:
    """A manifest's fields and how many dialogues it lists, read a line at a time (the list is one dialogue per
    line after the fields, as ``_write_manifest`` writes it), so a version of millions is never held whole."""
    head, listed = [], 0
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            head.append(line)
            if line.rstrip().endswith('"dialogues": ['):
                break
        else:
            raise ValueError('no "dialogues" list')
        listed = sum(line.lstrip().startswith("{") for line in lines)
    return json.loads("".join(head) + "]}"), listed
