"""seir's runtime: one package per concern, layered (docs/layout.md; the contracts in pyproject.toml).

cli on top; run (the only one that starts Ray); export and query, which read a version; seeds; dedup; store; spec;
and the modules every package uses: keys, records, errors, logs, progress, failpoints.
"""
