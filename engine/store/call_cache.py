"""A call cache shared by several outputs: a staging run and the production run, or two jobs that share an llm.

Model calls are keyed by exactly what determines their output (see ``calls.ModelClient.call_key``), so an answer is
valid in any output. Each output keeps its own answers in its provenance store; a shared cache is one more place to
look before computing, and every output that runs with it publishes its new answers there.

The store is SQLite in WAL mode: many readers and one writer at a time across processes, each write a short
transaction, so several seir runs can use one cache at once. The first answer to a key is kept (with the run and
output that made it); images that render calls return are copied beside it, content-addressed, so an output that
reads a render from the cache gets the picture too. Keep the folder on a local disk or a filesystem with working
POSIX locks (SQLite's WAL does not work over NFS).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seir.engine.errors import SeirError, disk_full, is_disk_full, writing
from seir.engine.records import ModelCall
from seir.engine.store.images import ImageStore
from seir.engine.store.integrity import DamagedStore, is_damage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS call_outputs (
    call_key TEXT PRIMARY KEY, role TEXT, method TEXT, model_id TEXT, output TEXT,
    first_run_id TEXT, first_out TEXT, created_at REAL);
"""


def damaged_cache(path: Path, problem: str) -> DamagedStore:
    return DamagedStore(f"the call cache {path} is damaged: {problem}. Nothing was changed. Every output keeps its "
                        f"own answers, so the cache can be rebuilt: move {path.name} aside and run again (the outputs "
                        "that run with it publish their answers to the new one).")


class SharedCallCache:
    FILENAME = "calls.sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.images = ImageStore(self.folder)
        path = self.folder / self.FILENAME
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.con = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.executescript(_SCHEMA)
            problems = [row[0] for row in self.con.execute("PRAGMA quick_check")]
        except (OSError, sqlite3.DatabaseError) as err:
            if is_damage(err):
                raise damaged_cache(path, str(err)) from None
            if is_disk_full(err):
                raise disk_full(self.folder, f"the call cache {self.FILENAME}") from None
            raise SeirError(f"cannot use {self.folder} as a call cache: {err}. Give --cache (or execution.cache) a "
                            f"folder seir can write; it holds {self.FILENAME} and images/.") from None
        if problems != ["ok"]:
            self.con.close()
            raise damaged_cache(path, "; ".join(problems[:3]))

    def close(self) -> None:
        self.con.close()

    def answered(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.con.execute(f"SELECT call_key, output FROM call_outputs WHERE call_key IN ({marks})", chunk)
            found.update((key, json.loads(output)) for key, output in rows)
        return found

    @staticmethod
    def copy_image(key: str, from_store: ImageStore, into: ImageStore) -> None:
        """A render's image, from the output that made it into the cache, or from the cache into an output."""
        if not into.path(key).exists():
            into.put(from_store.get(key))

    def publish(self, run_id: str, out_dir: Path, calls: Sequence[ModelCall], images: ImageStore) -> int:
        """Add this output's new answers; keys answered before keep their first answer. Returns how many were new."""
        fresh = [c for c in calls if not c.cached and "error" not in c.output]
        for call in fresh:
            if call.method == "render":
                self.copy_image(call.output["image_key"], from_store=images, into=self.images)
        stamp = time.time()
        with writing(self.folder, f"the call cache {self.FILENAME}"), self.con:
            self.con.execute("BEGIN IMMEDIATE")
            before = self.con.total_changes
            self.con.executemany(
                "INSERT OR IGNORE INTO call_outputs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(c.call_key, c.role, c.method, c.model_id, json.dumps(c.output), run_id, str(out_dir), stamp)
                 for c in fresh])
            return self.con.total_changes - before
