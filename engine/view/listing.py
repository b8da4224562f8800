"""The viewer's list of dialogues: one row per dialogue of the output (and per quarantined seed line), with its
status, reason and per-dimension mean final scores, so that paging, filtering and sorting a million dialogues reads
one narrow table instead of aggregating the store's scores on every request.

The list lives in a DuckDB file of the viewer's own (``dialogue_list``, documented in docs/viewer.md) and follows the
store as it grows. The store's tables only grow (rows are appended, never rewritten; dedup's decisions, which are
redone, are read whole each time), so each refresh reads only the rows added since the last one (``rowid`` at or
past the row count it saw, which DuckDB answers from the tables' row-group statistics) and rebuilds the rows of the
dialogues they touch; the read lock it takes on the store lasts that long, not a scan of the whole store. It also
records where each dialogue's rows lie in the store's large tables (``row_ranges``), so a dialogue page reads a few
row groups instead of scanning a hundred million score rows.

Requests query the list on a DuckDB instance that can read no file but the list (``enable_external_access`` off),
through cursors of their own, so a filter a person types (``where``) can neither write nor reach outside; the
refresh feeds it Arrow tables read from the store by a connection of its own.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from seir.engine.records import TURN_DIMENSIONS
from seir.engine.store import ProvenanceStore, StoreError
from seir.engine.store.base import cap_memory, limit_memory
from seir.engine.store.connect import when_free

PAGE_ROWS = 50
STATUSES = ("accepted", "rejected", "failed", "duplicate", "undecided", "quarantined")
SORTABLE = (*TURN_DIMENSIONS, "dialogue_id", "created_at", "n_turns", "verdicts")
# Tables whose new rows change a dialogue's row in the list; the ones a dialogue page reads by where its rows lie.
CHANGES_ROW = ("dialogues", "decisions", "turn_scores", "drafts", "human_verdicts")
LOCATED = ("dialogues", "decisions", "turns", "turn_scores", "drafts", "scores")
STREAM_ROWS = 65536  # rows per Arrow batch from the store into the list: a first listing's memory stays flat
GROWS = tuple(sorted({*CHANGES_ROW, *LOCATED, "version_dialogues", "quarantine"}))
DEDUP = "dedup"  # in ``seen``: a signature of dedup's decisions and the versions, not a row count
DEDUP_SIGNATURE = """SELECT (hash(count(*), max(created_at), (SELECT count(*) FROM p.versions))
                             % 9223372036854775807)::BIGINT FROM p.dedup"""

_MEANS = ",\n               ".join(f"avg(value) FILTER (WHERE dimension = '{d}') AS {d}" for d in TURN_DIMENSIONS)

LIST_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS dialogue_list (
    dialogue_key VARCHAR, dialogue_id VARCHAR, seed_id VARCHAR, seed_text VARCHAR, run_id VARCHAR,
    created_at TIMESTAMPTZ, n_turns INTEGER, status VARCHAR, reason VARCHAR, refined_stages VARCHAR[],
    models VARCHAR[], verdicts BIGINT, {", ".join(f"{d} DOUBLE" for d in TURN_DIMENSIONS)});
CREATE TABLE IF NOT EXISTS version_members (version INTEGER, dialogue_key VARCHAR);
CREATE TABLE IF NOT EXISTS row_ranges (dialogue_key VARCHAR, tab VARCHAR, lo BIGINT, hi BIGINT);
CREATE TABLE IF NOT EXISTS seen (tab VARCHAR, row_count BIGINT);
"""

# The list's rows of the dialogues in ``touched`` (every one on the first build), from the store attached as ``p``:
# each part into a temp table of its own first (temp tables spill to disk; one query holding every part's hash
# tables at once would not fit the reader's memory cap at a million dialogues), then joined.
PARTS_SQL = f"""
CREATE OR REPLACE TEMP TABLE list_dialogues AS
    SELECT dialogue_key, dialogue_id, seed_key, run_id, created_at, n_turns, failure
    FROM p.dialogues SEMI JOIN touched USING (dialogue_key)
    QUALIFY row_number() OVER (PARTITION BY dialogue_key ORDER BY created_at DESC) = 1;
CREATE OR REPLACE TEMP TABLE list_means AS
    SELECT dialogue_key,
           {_MEANS}
    FROM (SELECT ts.dialogue_key, ts.turn_index, ts.dimension, arg_max(ts.value, r.started_at) AS value
          FROM p.turn_scores ts SEMI JOIN touched USING (dialogue_key) JOIN p.runs r USING (run_id)
          WHERE ts.value IS NOT NULL GROUP BY ALL)
    GROUP BY dialogue_key;
CREATE OR REPLACE TEMP TABLE list_latest AS
    SELECT dialogue_key, arg_max(accepted, decided_at) AS accepted, arg_max(reason, decided_at) AS reason
    FROM p.decisions SEMI JOIN touched USING (dialogue_key) GROUP BY dialogue_key;
CREATE OR REPLACE TEMP TABLE list_refined AS
    SELECT dialogue_key, list(DISTINCT stage ORDER BY stage) AS stages
    FROM p.drafts SEMI JOIN touched USING (dialogue_key) WHERE round > 0 GROUP BY dialogue_key;
CREATE OR REPLACE TEMP TABLE list_seeds AS
    SELECT seed_key, any_value(seed_id) AS seed_id, any_value(text) AS seed_text
    FROM p.seeds SEMI JOIN list_dialogues USING (seed_key) GROUP BY seed_key;
"""

ROWS_SQL = f"""
    WITH dropped AS (
        SELECT dropped_id, any_value('duplicate of ' || matched_id || ' (' || method || ', similarity '
                                     || round(similarity, 3) || ')') AS reason
        FROM p.dedup WHERE run_id = (SELECT run_id FROM p.versions ORDER BY version DESC LIMIT 1)
        GROUP BY dropped_id),
    models AS (SELECT run_id, list(DISTINCT model_id ORDER BY model_id) AS models FROM p.models GROUP BY run_id),
    people AS (SELECT dialogue_key, count(*) AS verdicts FROM p.human_verdicts GROUP BY dialogue_key)
    SELECT d.dialogue_key, d.dialogue_id, s.seed_id, s.seed_text, d.run_id, d.created_at, d.n_turns,
           CASE WHEN d.failure <> '' THEN 'failed' WHEN x.dropped_id IS NOT NULL AND l.accepted THEN 'duplicate'
                WHEN l.accepted THEN 'accepted' WHEN l.accepted IS NULL THEN 'undecided' ELSE 'rejected' END
               AS status,
           CASE WHEN d.failure <> '' THEN d.failure WHEN x.dropped_id IS NOT NULL AND l.accepted THEN x.reason
                ELSE coalesce(l.reason, '') END AS reason,
           coalesce(rf.stages, []) AS refined_stages, coalesce(m.models, []) AS models,
           coalesce(pp.verdicts, 0) AS verdicts, {", ".join(f"means.{d}" for d in TURN_DIMENSIONS)}
    FROM list_dialogues d LEFT JOIN list_seeds s USING (seed_key) LEFT JOIN list_latest l USING (dialogue_key)
    LEFT JOIN dropped x ON x.dropped_id = d.dialogue_id LEFT JOIN list_refined rf USING (dialogue_key)
    LEFT JOIN models m ON m.run_id = d.run_id LEFT JOIN people pp USING (dialogue_key)
    LEFT JOIN list_means means USING (dialogue_key)"""

QUARANTINED_SQL = """
    SELECT q.source || ':' || q.line AS dialogue_id, q.raw AS seed_text, q.run_id, 'quarantined' AS status,
           q.field || ': ' || q.reason AS reason, 0 AS n_turns, [] AS refined_stages, [] AS models, 0 AS verdicts
    FROM p.quarantine q WHERE rowid >= $from"""


class ListRefused(StoreError):
    pass


@dataclass(frozen=True)
class ListQuery:
    """A page of the list, as the viewer's list page asks for it."""

    status: str = ""
    stage: str = ""  # dialogues a stage had to refine (a round after the first)
    model: str = ""
    seed: str = ""  # part of the seed's id or text
    version: int | None = None
    minimum: tuple[tuple[str, float], ...] = ()  # (dimension, lowest mean final score)
    maximum: tuple[tuple[str, float], ...] = ()
    where: str = ""  # free SQL over dialogue_list's columns
    sort: str = "dialogue_id"
    descending: bool = False
    page: int = 0

    @classmethod
    def of(cls, params: dict[str, str]) -> ListQuery:
        """From a request's query parameters, each checked (a ListRefused names the one that is wrong)."""
        def number(name: str, value: str) -> float:
            try:
                return float(value)
            except ValueError:
                raise ListRefused(f"{name}: {value!r} is not a number") from None

        status = params.get("status", "")
        if status and status not in STATUSES:
            raise ListRefused(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        sort = params.get("sort", "dialogue_id")
        if sort not in SORTABLE:
            raise ListRefused(f"sort: {sort!r} is not one of {', '.join(SORTABLE)}")
        version = params.get("version", "")
        page = params.get("page", "0")
        if not page.isdigit() or (version and not version.isdigit()):
            raise ListRefused("page and version are whole numbers")
        bounds = {kind: tuple((d, number(f"{kind}_{d}", params[f"{kind}_{d}"])) for d in TURN_DIMENSIONS
                              if params.get(f"{kind}_{d}")) for kind in ("min", "max")}
        return cls(status, params.get("stage", ""), params.get("model", ""), params.get("seed", ""),
                   int(version) if version else None, bounds["min"], bounds["max"], params.get("where", ""), sort,
                   params.get("order", "asc") == "desc", int(page))

    def sql(self) -> tuple[str, list[Any]]:
        """The WHERE clause and its parameters."""
        terms, values = ["true"], []
        for term, value in (("status = ?", self.status), ("list_contains(refined_stages, ?)", self.stage),
                            ("list_contains(models, ?)", self.model)):
            if value:
                terms.append(term)
                values.append(value)
        if self.seed:
            terms.append("(seed_id ILIKE ? OR seed_text ILIKE ?)")
            values += [f"%{self.seed}%"] * 2
        if self.version is not None:
            terms.append("dialogue_key IN (SELECT dialogue_key FROM version_members WHERE version = ?)")
            values.append(self.version)
        terms += [f"{d} >= {v!r}" for d, v in self.minimum] + [f"{d} <= {v!r}" for d, v in self.maximum]
        if self.where.strip():
            terms.append(f"({self.where})")
        return " AND ".join(terms), values


class Listing:
    """The list of ``out_dir``'s dialogues, kept in ``folder`` and brought up to date by ``refresh``."""

    def __init__(self, out_dir: Path, folder: Path) -> None:
        self.out_dir, self.folder = Path(out_dir), Path(folder)
        self.store_file = self.out_dir / ProvenanceStore.FILENAME
        self.folder.mkdir(parents=True, exist_ok=True)
        # The instance requests read; the refresh writes to it through this connection alone.
        self._list = duckdb.connect(str(self.folder / "list.duckdb"), config={"enable_external_access": False})
        cap_memory(self._list)
        self._list.execute(LIST_SCHEMA)
        self._writing = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self.refresh_s = 0.0

    def _stamp_now(self) -> tuple[int, ...]:
        """What changes whenever a writer commits: the store's file and its write-ahead log."""
        found: list[int] = []
        for path in (self.store_file, self.store_file.with_name(self.store_file.name + ".wal")):
            try:
                stat = path.stat()
                found += [stat.st_mtime_ns, stat.st_size]
            except FileNotFoundError:
                found += [0, 0]
        return tuple(found)

    def refresh(self) -> bool:
        """Bring the list up to date with the store, if a writer changed it since; returns whether it did."""
        with self._writing:
            stamp = self._stamp_now()
            if stamp == self._stamp:
                return False
            started = time.monotonic()
            self._refresh()
            self._stamp, self.refresh_s = stamp, time.monotonic() - started
            return True

    def _refresh(self) -> None:
        """Read what the store added into the list, one stream at a time (the store is held for reading meanwhile,
        and the list's transaction commits all of it or none)."""
        seen = dict(self._list.execute("SELECT tab, row_count FROM seen").fetchall())
        reader = duckdb.connect()
        con = self._list
        try:
            limit_memory(reader, self.folder / "spill")
            quoted = str(self.store_file).replace("'", "''")
            when_free(self.store_file, True, lambda: reader.execute(f"ATTACH '{quoted}' AS p (READ_ONLY)"))
            counts = {t: reader.execute(f"SELECT count(*) FROM p.{t}").fetchall()[0][0] for t in GROWS}
            counts[DEDUP] = reader.execute(DEDUP_SIGNATURE).fetchall()[0][0]
            con.execute("BEGIN TRANSACTION")
            try:
                if any(counts[t] < seen.get(t, 0) for t in GROWS):  # not the store this list was made of (a restore)
                    seen = {}
                    con.execute("DELETE FROM dialogue_list; DELETE FROM version_members; DELETE FROM row_ranges")
                duplicates = con.sql("SELECT dialogue_key FROM dialogue_list WHERE status = 'duplicate'"
                                     ).to_arrow_table()
                fresh = _Fresh(reader, seen, duplicates if counts[DEDUP] != seen.get(DEDUP) else None)
                for sql, into in fresh.queries():
                    stream = reader.sql(sql).to_arrow_reader(STREAM_ROWS)
                    con.register("fresh", stream)
                    try:
                        con.execute(into)
                    finally:
                        con.unregister("fresh")
                        stream.close()
                con.execute("DELETE FROM seen")
                con.executemany("INSERT INTO seen VALUES (?, ?)", list(counts.items()))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            reader.close()

    def page(self, query: ListQuery) -> tuple[list[str], list[tuple[Any, ...]], int]:
        """Column names, the page's rows and how many rows match."""
        where, values = query.sql()
        order = f"{query.sort} {'DESC' if query.descending else 'ASC'} NULLS LAST, dialogue_id"
        columns = ("dialogue_key, dialogue_id, status, reason, seed_id, n_turns, verdicts, "
                   + ", ".join(TURN_DIMENSIONS))
        sql = (f"SELECT {columns} FROM dialogue_list WHERE {where} ORDER BY {order} "
               f"LIMIT {PAGE_ROWS} OFFSET {query.page * PAGE_ROWS}")
        cursor = self._list.cursor()
        try:
            statements = cursor.extract_statements(sql)
            if len(statements) != 1 or statements[0].type.name != "SELECT":
                raise ListRefused("where: give one condition over dialogue_list's columns (docs/viewer.md)")
            result = cursor.execute(sql, values)
            names, rows = [d[0] for d in result.description], result.fetchall()
            total = cursor.execute(f"SELECT count(*) FROM dialogue_list WHERE {where}", values).fetchall()[0][0]
            return names, rows, total
        except duckdb.Error as err:
            raise ListRefused(f"where: {str(err).splitlines()[0]}") from None
        finally:
            cursor.close()

    def located(self, dialogue_key: str) -> dict[str, list[tuple[int, int | None]]]:
        """Per large table, the ranges of ``rowid`` that hold every row of the dialogue: where its rows were when the
        list last read them, and every row added since."""
        cursor = self._list.cursor()
        try:
            seen = dict(cursor.execute("SELECT tab, row_count FROM seen").fetchall())
            ranges: dict[str, list[tuple[int, int | None]]] = {t: [(seen[t], None)] for t in LOCATED if t in seen}
            for tab, lo, hi in cursor.execute("SELECT tab, lo, hi FROM row_ranges WHERE dialogue_key = ?",
                                              [dialogue_key]).fetchall():
                ranges[tab].append((lo, hi))
        finally:
            cursor.close()
        return ranges

    def close(self) -> None:
        with self._writing:
            self._list.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class _Fresh:
    """What a refresh reads from the store (attached to ``reader`` as ``p``): the rows added since ``seen`` (each
    table's row count when last read) and the dialogues they touch, left in the temp table ``touched``. Dedup's
    decisions are redone, not appended: when they changed (``duplicates``: the dialogues the list holds as
    duplicates), every dialogue they name now or named before is read again."""

    def __init__(self, reader: duckdb.DuckDBPyConnection, seen: dict[str, int], duplicates: pa.Table | None) -> None:
        self.reader, self.seen = reader, seen
        added = " UNION ".join(f"SELECT dialogue_key FROM p.{t} WHERE rowid >= {seen.get(t, 0)}" for t in CHANGES_ROW)
        if duplicates is not None:
            reader.register("listed_duplicates", duplicates)
            added += (" UNION SELECT d.dialogue_key FROM p.dialogues d SEMI JOIN p.dedup x ON x.dropped_id = "
                      "d.dialogue_id UNION SELECT dialogue_key FROM listed_duplicates")
        reader.execute(f"CREATE TEMP TABLE touched AS {added}")
        reader.execute(PARTS_SQL)

    def queries(self) -> list[tuple[str, str]]:
        """(what to read from the store, what the list does with it), in order: the touched dialogues' rows out,
        their rows in, the quarantined seed lines, where the new rows lie, and the versions' new members."""
        ranges = " UNION ALL ".join(
            f"SELECT dialogue_key, '{t}' AS tab, min(rowid) AS lo, max(rowid) AS hi FROM p.{t} "
            f"WHERE rowid >= {self.seen.get(t, 0)} GROUP BY dialogue_key" for t in LOCATED)
        return [
            ("SELECT dialogue_key FROM touched",
             "DELETE FROM dialogue_list WHERE dialogue_key IN (SELECT dialogue_key FROM fresh)"),
            (ROWS_SQL, "INSERT INTO dialogue_list BY NAME SELECT * FROM fresh"),
            (QUARANTINED_SQL.replace("$from", str(self.seen.get("quarantine", 0))),
             "INSERT INTO dialogue_list BY NAME SELECT * FROM fresh"),
            (ranges, "INSERT INTO row_ranges BY NAME SELECT * FROM fresh"),
            (f"SELECT version, dialogue_key FROM p.version_dialogues WHERE rowid >= "
             f"{self.seen.get('version_dialogues', 0)}", "INSERT INTO version_members BY NAME SELECT * FROM fresh"),
        ]
