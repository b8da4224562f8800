"""The writer holds provenance.duckdb only inside held() scopes; a reader in another process waits out a scope
and gives up, saying why, past $SEIR_READ_WAIT_S."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from seir.engine.store import ProvenanceStore, StoreError

READ = "from seir.engine.query import run_sql; import sys; print(run_sql(sys.argv[1], 'SELECT count(*) FROM runs')[1])"


def read_in_another_process(out: Path, wait_s: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEIR_READ_WAIT_S": str(wait_s)}
    return subprocess.run([sys.executable, "-c", READ, str(out)], capture_output=True, text=True, env=env,
                          timeout=60)


def test_a_reader_gets_in_between_scopes_and_waits_out_one(tmp_path: Path) -> None:
    store = ProvenanceStore(tmp_path)
    store.release_between_uses()
    with pytest.raises(StoreError, match=r"outside store\.held\(\)"):
        store.con.execute("SELECT 1")
    assert read_in_another_process(tmp_path, 5).stdout.strip() == "[(0,)]"

    with store.held():
        refused = read_in_another_process(tmp_path, 0.3)
    assert refused.returncode != 0 and "still locked after" in refused.stderr

    def hold_a_moment() -> None:
        with store.transaction():
            store.con.execute("INSERT INTO runs (run_id, kind, status) VALUES ('r1', 'run', 'running')")
            time.sleep(1.0)

    holder = threading.Thread(target=hold_a_moment)
    holder.start()
    time.sleep(0.1)
    started = time.monotonic()
    waited = read_in_another_process(tmp_path, 10)
    holder.join()
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == "[(1,)]"  # the committed row, never a half-written state
    assert time.monotonic() - started < 10
    store.close()
