"""Records declare their storage: the columns of the drafts and comparisons tables, as a new output's schema and its
migrations make them, are the fields their records declare stored, and the run that made them."""

from __future__ import annotations

from pathlib import Path

from seir.engine.records import Comparison
from seir.engine.store import ProvenanceStore
from seir.operators.stages import Draft, stored_fields


def columns(store: ProvenanceStore, table: str) -> list[str]:
    return [name for (name,) in store.con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND database_name = current_database() "
        "ORDER BY column_index", [table]).fetchall()]


def test_the_tables_columns_are_the_records_stored_fields(tmp_path: Path) -> None:
    with ProvenanceStore(tmp_path) as store:
        for record, table in ((Draft, "drafts"), (Comparison, "comparisons")):
            assert sorted(columns(store, table)) == sorted([f.name for f in stored_fields(record)] + ["run_id"])
        assert "scores" not in columns(store, "drafts")  # kept in memory, stored as rows of their own table
        assert "stages" in columns(store, "runs")
