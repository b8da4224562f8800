"""The example queries in docs/provenance.md run against a real output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.engine.conftest import FinishedRun

DOC = Path(__file__).resolve().parents[2] / "docs" / "provenance.md"
QUERIES = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_doc_has_at_least_five_example_queries() -> None:
    assert len(QUERIES) >= 5


@pytest.mark.parametrize("query", QUERIES, ids=[f"query{i + 1}" for i in range(len(QUERIES))])
def test_example_query_runs(finished: FinishedRun, query: str) -> None:
    finished.sql(query)  # raises on any error


def test_queries_that_must_find_rows_do(finished: FinishedRun) -> None:
    refinement, usage = QUERIES[1], QUERIES[3]
    assert finished.sql(refinement) and finished.sql(usage)
