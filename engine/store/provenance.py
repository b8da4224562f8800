"""The provenance store: one DuckDB file per output folder, written by one process only.

Workers never open it: the driver's committer ingests a whole shard (dialogues, turns, drafts, scores, images,
model calls) in one transaction and marks the shard committed, so a shard is committed exactly once. Every row
carries the run that produced it and the content key of what produced it.

``ProvenanceStore`` is a facade over one module per concern, all in this package:

- connect.py: opening the file, creating and migrating the schema (tables and views: schema.py);
- base.py: the connection (held only while in use, so others can read between commits), transactions and columnar
  inserts every concern uses;
- runs.py: runs, their seeds and plans, and what resuming reads back;
- call_records.py: the call cache (answers by call key) and the ledger of calls, outputs and images;
- shards.py: shard commits;
- decisions.py: score rows, rescoring and acceptance (the rule itself: acceptance.py);
- dedup_inputs.py: dialogue embeddings, dedup candidates and dedup decisions;
- verdicts.py: people's verdicts, and the inbox that keeps them until they are stored.
"""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb

from seir.engine.store.base import StoreError, limit_memory
from seir.engine.store.connect import attach_writer, detach_writer, open_reader
from seir.engine.store.dedup_inputs import DedupInputs
from seir.engine.store.runs import RunRecords
from seir.engine.store.shards import ShardCommits
from seir.engine.store.verdicts import Verdicts


class ProvenanceStore(RunRecords, ShardCommits, DedupInputs, Verdicts):
    FILENAME = "provenance.duckdb"

    def __init__(self, out_dir: Path, read_only: bool = False) -> None:
        self.path = Path(out_dir) / self.FILENAME
        self.out_dir, self.read_only = Path(out_dir), read_only
        self._guard = threading.RLock()
        # A writer's connection is in memory and outlives the file's attachments (temp tables included).
        self._memory = None if read_only else duckdb.connect()
        if self._memory is not None:
            limit_memory(self._memory, self.out_dir / ".spill")
        self._migrated = False
        with self.writing():
            self._con = self._open()  # created or migrated now, so a bad file is reported before any work

    def _open(self) -> duckdb.DuckDBPyConnection:
        if self._memory is None:
            return open_reader(self.path, self.out_dir)
        attach_writer(self._memory, self.path, prepare=not self._migrated)
        self._migrated = True
        return self._memory

    def scratch(self) -> duckdb.DuckDBPyConnection:
        """The writer's own connection, for temp tables (seeds being planned) that need the file not attached."""
        if self._memory is None:
            raise StoreError("a read-only store has no scratch tables")
        return self._memory

    def _release(self, con: duckdb.DuckDBPyConnection) -> None:
        if self._memory is None:
            con.close()
        else:
            detach_writer(con, self.path)

    def close(self) -> None:
        with self._guard, self.writing():
            self._close()
            if self._memory is not None:
                self._memory.close()

    def __enter__(self) -> ProvenanceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_read_only(out_dir: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to an output's store, opened between two of a running writer's commits."""
    return ProvenanceStore(out_dir, read_only=True).con
