"""Opening provenance.duckdb: create a new file at v1, migrate any older one forward, refuse a newer one.

What the tables and views are lives in schema.py; this is only how a connection gets there.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from seir.engine.errors import is_disk_full
from seir.engine.store.base import StoreError, Transaction, cap_memory
from seir.engine.store.integrity import (
    as_left,
    check_file,
    check_opened,
    damaged,
    is_damage,
    verify,
    write_stamp,
)
from seir.engine.store.schema import MIGRATIONS, SCHEMA_V1, SCHEMA_VERSION, VIEWS

# How long a reader waits for a writer's commit to end before giving up ($SEIR_READ_WAIT_S); a writer waits for
# readers as long as they hold the file, saying so every WRITER_NOTICE_S.
READ_WAIT_S = 10.0
WRITER_NOTICE_S = 30.0

T = TypeVar("T")
ATTACHED = "provenance"  # the writer's name for the file it attaches

# The oldest DuckDB release that opens provenance.duckdb (DuckDB's `storage_compatibility_version`).
STORAGE_VERSION = "v1.4.0"


def open_reader(path: Path, out_dir: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to ``path``, which must be at this seir's schema. It waits out a writer's commit."""
    if not path.exists():
        raise StoreError(f"no provenance database at {path}: run `seir run JOB --out {out_dir}` first")
    check_file(path)
    # A new file is written in DuckDB 1.4's storage format, so the clients people have (the PyPI CLI, DBeaver,
    # Python duckdb 1.x) open it; a file keeps the format it was created in (docs/provenance.md).
    con = when_free(path, True, lambda: duckdb.connect(
        str(path), read_only=True, config={"storage_compatibility_version": STORAGE_VERSION}))
    try:
        cap_memory(con)
        check_opened(con, path, every_block_list=False)
        _check_version(con, path)
    except BaseException:
        con.close()
        raise
    return con


def attach_writer(con: duckdb.DuckDBPyConnection, path: Path, prepare: bool) -> None:
    """Attach ``path`` for writing to ``con`` (an in-memory connection that outlives it) as the default database,
    migrated to this seir's schema when ``prepare``. Attaching is ~5x cheaper than a connection of its own, which
    matters because a run attaches and detaches around every unit of work. It waits for readers to close the file.

    When ``prepare``, a file that is not as seir's last writer left it is read whole first (integrity.py), so a
    damaged store is refused before any work."""
    quoted = str(path).replace("'", "''")
    existed = path.exists()
    if existed and prepare:
        check_file(path)
    # A new file is written in DuckDB 1.4's storage format (see open_reader); an existing one keeps its own.
    options = "" if existed else f" (STORAGE_VERSION '{STORAGE_VERSION}')"
    when_free(path, False, lambda: con.execute(f"ATTACH '{quoted}' AS {ATTACHED}{options}"))
    con.execute(f"USE {ATTACHED}")
    if prepare:
        try:
            check_opened(con, path, every_block_list=existed)
            if existed and not as_left(path):
                print(f"[seir] reading {path} whole before writing to it: it changed since seir last wrote it",
                      file=sys.stderr, flush=True)
                verify(con, path)
            _create_or_migrate(con, path)
        except BaseException:
            detach_writer(con, None)  # not stamped: the file was not found as it should be
            raise


def detach_writer(con: duckdb.DuckDBPyConnection, path: Path | None) -> None:
    """Checkpoint (readers then find no write-ahead log to replay), release the file and stamp ``path`` as left."""
    try:
        con.execute(f"CHECKPOINT {ATTACHED}")
    except duckdb.Error as err:
        if is_disk_full(err):  # the commits stay in the write-ahead log; the next writer replays them
            raise
        # otherwise a failed transaction, which has nothing to checkpoint
    finally:
        con.execute("USE memory")
        con.execute(f"DETACH {ATTACHED}")
    if path is not None:
        write_stamp(path)


def when_free(path: Path, read_only: bool, connect: Callable[[], T]) -> T:
    """``connect()``, retried while another process holds ``path`` (a reader gives up after $SEIR_READ_WAIT_S)."""
    read_wait_s = float(os.environ.get("SEIR_READ_WAIT_S", READ_WAIT_S))
    started = noticed = time.monotonic()
    pause = 0.005
    while True:
        try:
            return connect()
        except duckdb.Error as err:
            if is_damage(err):
                raise damaged(path, str(err).splitlines()[0]) from None
            if not isinstance(err, duckdb.IOException) or "lock" not in str(err).lower():
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
