"""What every part of the provenance store shares: the connection, its transactions and columnar inserts.

The store's concerns (the other modules of this package) are mixins over ``StoreBase``; ``ProvenanceStore``
(provenance.py) composes them and opens the connection.

DuckDB lets one process hold a database file for writing, and no other process may even read it meanwhile. So a
run does not keep the file open: ``held()`` attaches it for one unit of work (a shard's commit, a cache look-up,
the dedup pass), and when the outermost scope ends it checkpoints and detaches it, so readers in other processes
see every committed shard between two units (docs/provenance.md, "Reading while a run writes").
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import duckdb
import pyarrow as pa

from seir.engine.errors import SeirError, writing


class StoreError(SeirError):
    pass


def now() -> datetime:
    return datetime.now(timezone.utc)


class Transaction:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def __enter__(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.con.execute("ROLLBACK" if exc_type else "COMMIT")


P = ParamSpec("P")
R = TypeVar("R")


def held(method: Callable[P, R]) -> Callable[P, R]:
    """A store method that opens the file for its own duration when no enclosing ``held()`` scope has."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with args[0].held():  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    return wrapper


class StoreBase:
    path: Path
    _con: duckdb.DuckDBPyConnection | None = None
    _depth: int = 0
    _keep_open: bool = True  # False: the file is open only inside held() scopes
    _guard: threading.RLock

    def _open(self) -> duckdb.DuckDBPyConnection:
        raise NotImplementedError

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            if not self._keep_open:
                raise StoreError("internal error: provenance store used outside store.held()")
            self._con = self._open()
        return self._con

    @contextmanager
    def held(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The file open for writing for this scope (scopes nest); closed after the outermost one unless the store
        keeps it open."""
        with self._guard, self.writing():
            if self._con is None:
                self._con = self._open()
            self._depth += 1
            try:
                yield self._con
            except BaseException:
                self._depth -= 1
                if self._depth == 0 and not self._keep_open:
                    with contextlib.suppress(Exception):  # the error in flight is the one that says what happened
                        self._close()
                raise
            self._depth -= 1
            if self._depth == 0 and not self._keep_open:
                self._close()

    def writing(self) -> AbstractContextManager[None]:
        """A full disk while the store is written (its file, or DuckDB's spill files beside it) named as such."""
        return writing(self.path.parent, f"{self.path.name} (or DuckDB's spill files)")

    def release_between_uses(self) -> None:
        """From now on hold the file only inside ``held()`` scopes, so other processes can read it in between."""
        with self._guard:
            self._keep_open = False
            if self._depth == 0 and self._con is not None:
                self._close()

    def _release(self, con: duckdb.DuckDBPyConnection) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            self._release(con)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.held() as con, Transaction(con):
            yield

    def paged(self, query: str, order: str, size: int,
              params: list[Any] | dict[str, Any] | None = None) -> Iterator[pa.Table]:
        """``pages`` of a query over the store: the query runs while the file is held, its pages are read from a
        temp table, so the file is free between them (a commit may come in between)."""
        with self.held():
            rows = pages(self.con, query, order, size, params)
            first = next(rows, None)
        if first is not None:
            yield first
            yield from rows

    def _insert(self, table: str, columns: dict[str, list[Any]], on_conflict_ignore: bool = False) -> None:
        if next(iter(columns.values()), []):
            self.insert_arrow(table, pa.table(columns), on_conflict_ignore)

    def insert_arrow(self, table: str, incoming_rows: pa.Table, on_conflict_ignore: bool = False) -> None:
        """Columns matched by name; DuckDB reads ``incoming_rows`` by a replacement scan of this frame."""
        verb = "INSERT OR IGNORE INTO" if on_conflict_ignore else "INSERT INTO"
        self.con.execute(f"{verb} {table} BY NAME SELECT * FROM incoming_rows")


# DuckDB's working memory in the driver: large joins, sorts and temp tables spill to disk beyond it, so the driver's
# footprint does not grow with the dataset ($SEIR_DUCKDB_MEMORY, a DuckDB size such as '1GB').
DUCKDB_MEMORY = "256MB"
_paged = itertools.count()


def memory_cap() -> str:
    """DuckDB's working memory in this process: $SEIR_DUCKDB_MEMORY, else ``DUCKDB_MEMORY``."""
    return os.environ.get("SEIR_DUCKDB_MEMORY", DUCKDB_MEMORY)


def cap_memory(con: duckdb.DuckDBPyConnection) -> None:
    """Cap ``con``'s working memory, its cache of blocks read included (a reader that reads a whole store would
    otherwise keep up to 80% of the machine's memory of it), and keep DuckDB's own progress bar off the terminal
    (a query past 2 s prints one; seir's meters say how far long steps are)."""
    con.execute(f"SET memory_limit = '{memory_cap()}'")
    con.execute("SET enable_progress_bar = false")


def limit_memory(con: duckdb.DuckDBPyConnection, spill_dir: Path) -> None:
    """Cap ``con``'s working memory and let it spill into ``spill_dir``."""
    spill_dir.mkdir(parents=True, exist_ok=True)
    quoted = str(spill_dir).replace("'", "''")
    cap_memory(con)
    con.execute(f"SET temp_directory = '{quoted}'")


def pages(con: duckdb.DuckDBPyConnection, query: str, order: str, size: int,
          params: list[Any] | dict[str, Any] | None = None) -> Iterator[pa.Table]:
    """The rows of ``query`` in its column order, ``size`` at a time, sorted by ``order`` (an expression over its
    columns), holding one page at a time. The query runs once into a temp table numbered
    in order; each page reads a range of that number, which skips every other row group by its min/max, so reading
    all pages stays linear. Statements may run on ``con`` between pages."""
    table = f"paged_{next(_paged)}"
    con.execute(f"CREATE TEMP TABLE {table} AS SELECT row_number() OVER (ORDER BY {order}) - 1 AS page_row, * "
                f"FROM ({query}) ORDER BY page_row", params)
    try:
        total = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        for start in range(0, total, size):
            yield con.sql(f"SELECT * EXCLUDE (page_row) FROM {table} WHERE page_row >= $lo AND page_row < $hi "
                          "ORDER BY page_row", params={"lo": start, "hi": start + size}).to_arrow_table()
    finally:
        con.execute(f"DROP TABLE IF EXISTS {table}")
