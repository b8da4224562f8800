"""SQL while a run writes: seir sql, lineage, versions, Python duckdb and the DuckDB CLI answer within 2 s from
another process, see every shard committed so far, and never a torn shard."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from seir.engine.query import lineage, run_sql, versions
from tests.engine.conftest import TOPICS, job_dict, write_job
from tests.engine.run.test_resume import kill_group, seir_run

# The same snapshot seen two ways: dialogues written, and dialogues that committed shards say they hold. A torn read
# (a shard's dialogues without its commit mark, or the reverse) makes them differ.
CONSISTENCY = """SELECT (SELECT count(*) FROM shards WHERE status = 'committed'),
                        (SELECT count(*) FROM dialogues),
                        (SELECT coalesce(sum(len(dialogue_keys)), 0) FROM shards WHERE status = 'committed'),
                        (SELECT count(*) FROM drafts WHERE dialogue_key NOT IN (SELECT dialogue_key FROM dialogues))"""
ANSWER_WITHIN_S = 2.0


def python_client(db: Path) -> tuple[int, int, int, int]:
    """A plain read-only DuckDB client that retries on the lock, as docs/provenance.md tells users to."""
    deadline = time.monotonic() + ANSWER_WITHIN_S
    while True:
        try:
            with duckdb.connect(str(db), read_only=True) as con:
                return con.execute(CONSISTENCY).fetchall()[0]
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def cli_client(cli: str, db: Path) -> tuple[int, ...]:
    deadline = time.monotonic() + ANSWER_WITHIN_S
    while True:
        done = subprocess.run([cli, "-readonly", "-csv", "-noheader", str(db), CONSISTENCY],
                              capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            return tuple(int(x) for x in done.stdout.strip().split(","))
        assert "lock" in done.stderr.lower(), done.stderr
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.02)


def test_queries_answer_while_a_run_commits_shards(ray_local: None, tmp_path: Path) -> None:
    spec = job_dict("reading", topics=TOPICS[:6], seir={"turns": 1, "rounds": 1},
                    execution={"shard_size": 1, "shards_in_flight": 1})
    job = write_job(tmp_path / "job", spec, seed_lines=[])
    out = tmp_path / "out"
    db = out / "provenance.duckdb"
    cli = shutil.which("duckdb", path=str(Path(sys.executable).parent))
    assert cli, "duckdb-cli (a dev dependency) is not installed beside this Python"
    run = seir_run(job, out)
    seen: list[int] = []
    answers: list[float] = []
    checked_lineage = False
    try:
        while run.poll() is None:
            if not db.exists():
                time.sleep(0.2)
                continue
            for ask in ("seir", "python", "cli"):
                started = time.monotonic()
                if ask == "seir":
                    _, rows = run_sql(out, CONSISTENCY)
                    shards, dialogues, promised, orphans = rows[0]
                elif ask == "python":
                    shards, dialogues, promised, orphans = python_client(db)
                else:
                    shards, dialogues, promised, orphans = cli_client(cli, db)
                answers.append(time.monotonic() - started)
                assert dialogues == promised and orphans == 0, (ask, shards, dialogues, promised, orphans)
                assert not seen or shards >= seen[-1], "a later answer saw fewer committed shards"
                seen.append(shards)
            if seen[-1] and not checked_lineage:
                _, ids = run_sql(out, "SELECT dialogue_id FROM dialogues LIMIT 1")
                tree = lineage(out, ids[0][0])
                assert tree["dialogue_id"] == ids[0][0] and tree["seed"]["seed_id"]
                versions(out)  # answers (no version yet, or the listing) rather than failing on the lock
                checked_lineage = True
            time.sleep(0.3)
        assert run.returncode == 0, run.stderr.read() if run.stderr else ""
    finally:
        if run.poll() is None:
            kill_group(run)
    assert checked_lineage, "no committed shard was seen while the run worked"
    assert len({s for s in seen if 0 < s < 6}) >= 2, f"committed shards seen during the run: {seen}"
    assert max(answers) < ANSWER_WITHIN_S, max(answers)
    _, rows = run_sql(out, "SELECT count(*) FROM dialogues")
    assert rows == [(6,)]
