"""Opening provenance.duckdb: create a new file at v1, migrate any older one forward, refuse a newer one.

What the tables and views are lives in engine/schema.py; this is only how a connection gets there.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import duckdb

from seir.engine.schema import MIGRATIONS, SCHEMA_V1, SCHEMA_VERSION, VIEWS
from seir.engine.store_base import StoreError, Transaction

# How long a reader waits for a writer's commit to end before giving up ($SEIR_READ_WAIT_S); a writer waits for
# readers as long as they hold the file, saying so every WRITER_NOTICE_S.
READ_WAIT_S = 10.0
WRITER_NOTICE_S = 30.0

# The oldest DuckDB release that opens provenance.duckdb (DuckDB's `storage_compatibility_version`).
STORAGE_VERSION = "v1.4.0"


def open_store(path: Path, out_dir: Path, read_only: bool, prepare: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection to ``path``: writable ones are migrated to this seir's schema (when ``prepare``), read-only ones
    must be at it. The file is locked by whoever has it open: a reader waits out a writer's commit, a writer waits
    for readers to close it."""
    if read_only and not path.exists():
        raise StoreError(f"no provenance database at {path}: run `seir run JOB --out {out_dir}` first")
    con = _connect_when_free(path, read_only)
    try:
        if read_only:
            _check_version(con, path)
        elif prepare:
            _create_or_migrate(con, path)
    except BaseException:
        con.close()
        raise
    return con


def _connect_when_free(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    read_wait_s = float(os.environ.get("SEIR_READ_WAIT_S", READ_WAIT_S))
    started = noticed = time.monotonic()
    pause = 0.005
    while True:
        try:
            # A new file is written in DuckDB 1.4's storage format, so the clients people have (the PyPI CLI,
            # DBeaver, Python duckdb 1.x) open it; a file keeps the format it was created in (docs/provenance.md).
            return duckdb.connect(str(path), read_only=read_only,
                                  config={"storage_compatibility_version": STORAGE_VERSION})
        except duckdb.IOException as err:
            if "lock" not in str(err).lower():
                raise StoreError(f"cannot open {path}: {err}") from None
            waited = time.monotonic() - started
            if read_only and waited >= read_wait_s:
                raise StoreError(f"cannot open {path}: still locked after {waited:.0f}s ({err}). A seir run holds "
                                 "it only while committing a shard, so this is another writer or a long dedup "
                                 "pass; try again, or raise $SEIR_READ_WAIT_S.") from None
            if not read_only and time.monotonic() - noticed >= WRITER_NOTICE_S:
                noticed = time.monotonic()
                print(f"[seir] waiting {waited:.0f}s for a reader to close {path} ({err}); a DuckDB client keeps "
                      "it locked while it is open: query, then close it", file=sys.stderr, flush=True)
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def _create_or_migrate(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    found = _stored_version(con)
    if found is None:
        with Transaction(con):
            con.execute(SCHEMA_V1)
            con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        found = 1
    _refuse_newer(path, found)
    for version in range(found, SCHEMA_VERSION):
        with Transaction(con):  # each step commits whole or not at all
            con.execute(MIGRATIONS[version])
            con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(version + 1)])
    con.execute(VIEWS)


def _stored_version(con: duckdb.DuckDBPyConnection) -> int | None:
    has_meta = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'meta' AND database_name = current_database()"
    ).fetchall()[0][0]
    if not has_meta:
        return None
    rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else None


def _refuse_newer(path: Path, found: int | None) -> None:
    if found is not None and found > SCHEMA_VERSION:
        raise StoreError(f"{path} has provenance schema v{found}, newer than the v{SCHEMA_VERSION} this "
                         "seir knows: upgrade seir to use this output.")


def _check_version(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    found = _stored_version(con)
    _refuse_newer(path, found)
    if found != SCHEMA_VERSION:
        raise StoreError(f"{path} has provenance schema v{found}, this seir reads v{SCHEMA_VERSION}: "
                         "open it once for writing (any seir command that writes, e.g. `seir dedup`) to "
                         "migrate it forward.")
