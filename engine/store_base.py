"""What every part of the provenance store shares: the connection, its transactions and columnar inserts.

The store's concerns (engine/store_*.py) are mixins over ``StoreBase``; ``ProvenanceStore`` (engine/store.py)
composes them and opens the connection.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from seir.engine.errors import SeirError


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


class StoreBase:
    path: Path
    con: duckdb.DuckDBPyConnection

    def transaction(self) -> Transaction:
        return Transaction(self.con)

    def _insert(self, table: str, columns: dict[str, list[Any]], on_conflict_ignore: bool = False) -> None:
        if next(iter(columns.values()), []):
            self.insert_arrow(table, pa.table(columns), on_conflict_ignore)

    def insert_arrow(self, table: str, incoming_rows: pa.Table, on_conflict_ignore: bool = False) -> None:
        """Columns matched by name; DuckDB reads ``incoming_rows`` by a replacement scan of this frame."""
        verb = "INSERT OR IGNORE INTO" if on_conflict_ignore else "INSERT INTO"
        self.con.execute(f"{verb} {table} BY NAME SELECT * FROM incoming_rows")
