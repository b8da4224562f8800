"""Is a store file whole? The cheap checks every open makes, the full read ``seir check`` makes, and the stamp that
tells a writer whether the file is still as seir left it.

DuckDB reads a file lazily: a file cut short or with a damaged block opens fine and fails only when a query reaches
the missing or damaged block, possibly hours into a run. So before any work:

- every open reads the catalog and every table's block list, and compares the file's length with the highest block
  in use (a copy that broke off, a disk that failed);
- a writer reads every block of every table (DuckDB verifies each block's checksum as it reads it) when the file
  is not as seir's last writer left it: its size or modification time differs from the stamp written after each
  commit, so the full read runs after a copy, a restore or a tool's write, not on every open.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from seir.engine.store.base import StoreError

# Where execution.snapshots keeps them (OUT/snapshots/NAME/), and each one's record: snapshots.py writes them, the
# damaged store's message names the newest.
SNAPSHOTS, SNAPSHOT_RECORD = "snapshots", "snapshot.json"
_HEADER_BYTES = 3 * 4096  # DuckDB's main header and its two database headers, before the first block

# What DuckDB says when it reads a block that is not there or not what was written.
_DAMAGE_TEXT = ("could not read enough bytes", "corrupt database file", "not a valid duckdb database file",
                "does not match stored checksum", "database disk image is malformed", "file is not a database")


class DamagedStore(StoreError):
    pass


def is_damage(err: BaseException) -> bool:
    """Whether ``err`` is a store file that cannot be read as written (not a lock, not a query's own error)."""
    return isinstance(err, DamagedStore) or any(text in str(err).lower() for text in _DAMAGE_TEXT)


def snapshot_folders(out_dir: Path) -> list[Path]:
    """The snapshots kept in ``out_dir``, oldest first (their names start with the version they were taken at)."""
    return sorted(record.parent for record in (out_dir / SNAPSHOTS).glob(f"*/{SNAPSHOT_RECORD}"))


def damaged(path: Path, problem: str) -> DamagedStore:
    """The one line a damaged store gets: the file, the problem, and where to go from here."""
    out_dir = path.parent
    snapshots = snapshot_folders(out_dir)
    latest = (f"restore the last snapshot with `seir restore --out {out_dir} --from {snapshots[-1]}`"
              if snapshots else "restore a backup (`seir restore --out DIR --from BACKUP`) if you made one")
    return DamagedStore(f"{path} is damaged: {problem}. Nothing was changed. Run `seir check --out {out_dir}` to see "
                        f"what is affected, then {latest}.")


def check_file(path: Path) -> None:
    """What can be refused before DuckDB opens the file (DuckDB itself refuses a file without its header)."""
    if path.stat().st_size == 0:
        raise damaged(path, "the file is empty")


def check_opened(con: duckdb.DuckDBPyConnection, path: Path, every_block_list: bool) -> None:
    """Refuse a file shorter than its blocks in use need: a copy that broke off or a disk that failed. (A file may
    be shorter than the blocks its header counts, since DuckDB drops free blocks from its end.)

    Without ``every_block_list`` (readers, which must open in milliseconds) the bound is the count of blocks in
    use, which a file cut by more than its free blocks fails; with it (a writer, once per command) the highest
    block any table or the catalog uses, read from every table's block list (metadata only, growing with the
    store's row groups), which any cut that loses a block in use fails."""
    try:
        used, block_bytes = con.execute("SELECT used_blocks, block_size FROM pragma_database_size() "
                                        "WHERE database_name = current_database()").fetchall()[0]
        if every_block_list:
            lists = " UNION ALL ".join([f"SELECT max(block_id) AS block FROM pragma_storage_info('{table}')"
                                        for table in user_tables(con)]
                                       + ["SELECT max(block_id) AS block FROM pragma_metadata_info()"])
            highest = con.execute(f"SELECT max(block) FROM ({lists})").fetchall()[0][0]
            used = max(used, highest + 1 if highest is not None else 0)
    except duckdb.Error as err:
        if is_damage(err):
            raise damaged(path, str(err).splitlines()[0]) from None
        raise
    size, needed = path.stat().st_size, _HEADER_BYTES + used * block_bytes
    if size < needed:
        raise damaged(path, f"it is {size:,} bytes long, but its blocks in use need {needed:,} (cut short: a copy "
                      "that broke off or a disk that failed)")


def user_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND NOT temporary "
        "ORDER BY table_name").fetchall()]


def read_every_block(con: duckdb.DuckDBPyConnection, on_table: Callable[[str, int], None] | None = None
                     ) -> dict[str, str]:
    """Read every value of every table (hashing forces each column's blocks in, and DuckDB checks each block's
    checksum as it reads it); returns the tables that failed, with why."""
    failed: dict[str, str] = {}
    for table in user_tables(con):
        try:
            rows = con.execute(f'SELECT count(*), bit_xor(hash(COLUMNS(*))) FROM "{table}"').fetchall()[0][0]
        except duckdb.Error as err:
            failed[table] = str(err).splitlines()[0]
            continue
        if on_table is not None:
            on_table(table, rows)
    return failed


def verify(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Refuse the store unless every block of every table reads back as written."""
    failed = read_every_block(con)
    if failed:
        table, why = next(iter(failed.items()))
        more = f" (and {len(failed) - 1} more tables)" if len(failed) > 1 else ""
        raise damaged(path, f"table {table} cannot be read: {why}{more}")


# -- the stamp: how seir's last writer left the file ----------------------------------------------------------------
def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.stamp")


def _identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_stamp(path: Path) -> None:
    """After a writer released the file: its size and modification time, as this writer left it."""
    stamp = _stamp_path(path)
    temp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(json.dumps(_identity(path)), encoding="utf-8")
        temp.replace(stamp)
    except OSError:  # a full disk: the next writer reads the whole file once instead
        temp.unlink(missing_ok=True)
        stamp.unlink(missing_ok=True)


def as_left(path: Path) -> bool:
    """Whether the file is as seir's last writer left it (False when no writer stamped it)."""
    try:
        return json.loads(_stamp_path(path).read_text(encoding="utf-8")) == _identity(path)
    except (OSError, ValueError):
        return False
