"""Asking an output: read-only SQL, dataset versions and what changed between two (sql.py), and a dialogue's
lineage (lineage.py). Everything here opens the store read-only, between a running writer's commits.

Uses: the store.
"""

from seir.engine.query.lineage import format_lineage, lineage, lineage_json
from seir.engine.query.sql import (
    QueryRefused,
    diff,
    format_diff,
    format_table,
    parse_version,
    run_sql,
    versions,
    write_rows,
)

__all__ = ["QueryRefused", "diff", "format_diff", "format_lineage", "format_table", "lineage", "lineage_json",
           "parse_version", "run_sql", "versions", "write_rows"]
