"""The example queries in docs/provenance.md run against a real output."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from seir.engine.store import STORAGE_VERSION
from tests.engine.conftest import FinishedRun

DOC = Path(__file__).resolve().parents[3] / "docs" / "provenance.md"
QUERIES = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_doc_has_at_least_five_example_queries() -> None:
    assert len(QUERIES) >= 5


@pytest.mark.parametrize("query", QUERIES, ids=[f"query{i + 1}" for i in range(len(QUERIES))])
def test_example_query_runs(finished: FinishedRun, query: str) -> None:
    finished.sql(query)  # raises on any error


def test_queries_that_must_find_rows_do(finished: FinishedRun) -> None:
    refinement, usage = QUERIES[1], QUERIES[3]
    assert finished.sql(refinement) and finished.sql(usage)


def test_the_pypi_duckdb_cli_opens_the_store_and_runs_the_examples(finished: FinishedRun) -> None:
    """The CLI a user installs with `pip install duckdb-cli` (the dev extra pins DuckDB 1.4, the oldest the doc
    promises) opens what this process's DuckDB wrote, and every example query runs in it."""
    path = finished.out / "provenance.duckdb"
    with duckdb.connect(str(path), read_only=True) as con:
        tags = con.execute("SELECT tags FROM duckdb_databases() WHERE database_name = 'provenance'").fetchone()
    assert tags == ({"storage_version": f"{STORAGE_VERSION}+"},)
    cli = Path(sys.executable).with_name("duckdb")  # duckdb-cli's binary; the Python module installs none
    assert cli.is_file(), f"{cli} not found: `pip install -c constraints.txt -e '.[dev]'` installs duckdb-cli"
    version = subprocess.run([cli, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert version.startswith("v1."), version
    printed = []
    for i, query in enumerate(QUERIES, start=1):
        done = subprocess.run([cli, "-readonly", "-bail", "-csv", path, "-c", query], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"DuckDB CLI {version}, query {i}: {done.stderr}"
        printed.append(done.stdout.splitlines())
    refinement, usage = printed[1], printed[3]
    assert len(refinement) > 1 and len(usage) > 1, (refinement, usage)  # a header and at least one row
