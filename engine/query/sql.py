"""Asking the provenance store: read-only SQL, dataset versions and what changed between two.

Everything here opens the database read-only, between two of a running writer's commits: the writer holds the file
only while it commits, and opening waits out a commit in progress (docs/provenance.md, "Reading while a run writes").
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import duckdb
import pyarrow.parquet as pq

from seir.engine.errors import SeirError
from seir.engine.store import ProvenanceStore, damaged, is_damage, open_read_only, version_name

READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA"}


class QueryRefused(SeirError):
    pass


def run_sql(out_dir: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of a read-only query. Statements that would write are refused before running."""
    con = open_read_only(out_dir)
    try:
        for statement in con.extract_statements(sql):
            kind = statement.type.name
            if kind not in READ_ONLY_STATEMENTS:
                raise QueryRefused(f"seir sql runs read-only queries; this is a {kind} statement, which would change "
                                   "the provenance store or read outside it. Query with SELECT (and write results "
                                   "with --format csv|json|parquet --output FILE).")
        result = con.execute(sql)
        return [d[0] for d in result.description or []], result.fetchall()
    except duckdb.Error as err:
        if is_damage(err):
            raise damaged(out_dir / ProvenanceStore.FILENAME, str(err).splitlines()[0]) from None
        raise QueryRefused(f"query failed: {err}") from None
    finally:
        con.close()


def write_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str, output: Path | None,
               stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    if fmt == "table":
        stream.write(format_table(columns, rows) + "\n")
    elif fmt == "parquet":
        if output is None:
            raise QueryRefused("--format parquet needs --output FILE")
        pq.write_table(_arrow(columns, rows), output)
    else:
        with output.open("w", newline="", encoding="utf-8") if output else nullcontext(stream) as handle:
            if fmt == "csv":
                writer = csv.writer(handle, lineterminator="\n")  # Unix line ends, as DuckDB and shell tools write
                writer.writerow(columns)
                writer.writerows(rows)
            else:
                for row in rows:
                    handle.write(json.dumps(dict(zip(columns, row, strict=True)), default=_json_default) + "\n")


def format_table(columns: list[str], rows: Sequence[Sequence[Any]], max_width: int = 60) -> str:
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    body = [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, "-+-".join("-" * w for w in widths), *body, f"({len(rows)} rows)"])


def versions(out_dir: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    con = open_read_only(out_dir)
    try:
        result = con.execute("""
            SELECT 'v' || lpad(v.version::VARCHAR, 4, '0') AS version, v.created_at,
                   v.kind || CASE WHEN v.partial THEN ' (partial)' ELSE '' END AS kind, v.run_id,
                   count(*) FILTER (WHERE vd.accepted) AS accepted, count(*) FILTER (WHERE NOT vd.accepted) AS rejected,
                   r.job_name, v.job_key
            FROM versions v JOIN runs r USING (run_id) LEFT JOIN version_dialogues vd USING (version)
            GROUP BY v.version, v.created_at, v.kind, v.partial, v.run_id, r.job_name, v.job_key ORDER BY v.version""")
        return [d[0] for d in result.description], result.fetchall()
    finally:
        con.close()


def parse_version(text: str) -> int:
    try:
        return int(text.lower().removeprefix("v"))
    except ValueError:
        raise QueryRefused(f"{text!r} is not a version: give a number or a name like v0002") from None


def diff(out_dir: Path, before: int, after: int) -> dict[str, list[dict[str, Any]]]:
    """What ``after`` added, removed and changed relative to ``before`` (accepted dialogues), and which kept
    dialogues changed status."""
    con = open_read_only(out_dir)
    try:
        known = {row[0] for row in con.execute("SELECT version FROM versions").fetchall()}
        for number in (before, after):
            if number not in known:
                raise QueryRefused(f"no version {version_name(number)} in {out_dir} (see `seir versions`)")
        rows = con.execute("""
            WITH a AS (SELECT * FROM version_dialogues WHERE version = ?),
                 b AS (SELECT * FROM version_dialogues WHERE version = ?)
            SELECT coalesce(a.dialogue_id, b.dialogue_id) AS dialogue_id, a.dialogue_key, a.accepted,
                   b.dialogue_key, b.accepted
            FROM a FULL JOIN b USING (dialogue_id) ORDER BY 1""", [before, after]).fetchall()
    finally:
        con.close()
    result: dict[str, list[dict[str, Any]]] = {"added": [], "removed": [], "changed": [], "status": []}
    for dialogue_id, key_a, ok_a, key_b, ok_b in rows:
        in_a, in_b = bool(ok_a), bool(ok_b)
        if in_b and not in_a and key_a is None:
            result["added"].append({"dialogue_id": dialogue_id, "dialogue_key": key_b})
        elif in_a and key_b is None:
            result["removed"].append({"dialogue_id": dialogue_id, "dialogue_key": key_a})
        elif key_a is not None and key_b is not None and key_a != key_b:
            result["changed"].append({"dialogue_id": dialogue_id, "from": key_a, "to": key_b,
                                      "accepted": [in_a, in_b]})
        elif key_a is not None and key_b is not None and in_a != in_b:
            result["status"].append({"dialogue_id": dialogue_id, "accepted": [in_a, in_b]})
    return result


def format_diff(found: dict[str, list[dict[str, Any]]], before: int, after: int) -> str:
    lines = [f"{version_name(before)} -> {version_name(after)}: {len(found['added'])} added, "
             f"{len(found['removed'])} removed, {len(found['changed'])} changed, "
             f"{len(found['status'])} changed status"]
    for entry in found["added"]:
        lines.append(f"+ {entry['dialogue_id']}")
    for entry in found["removed"]:
        lines.append(f"- {entry['dialogue_id']}")
    for entry in found["changed"]:
        lines.append(f"~ {entry['dialogue_id']}: {entry['from'][:12]} -> {entry['to'][:12]}")
    for entry in found["status"]:
        verdict = "accepted" if entry["accepted"][1] else "rejected"
        lines.append(f"! {entry['dialogue_id']}: now {verdict}")
    return "\n".join(lines)


def _arrow(columns: list[str], rows: list[tuple[Any, ...]]) -> Any:
    import pyarrow as pa

    return pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})


def _cell(value: Any, max_width: int) -> str:
    text = "NULL" if value is None else value.isoformat(sep=" ", timespec="seconds") if isinstance(
        value, datetime) else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)

