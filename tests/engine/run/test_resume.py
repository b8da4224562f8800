"""kill -9 at any moment, run the same command again: it resumes and ends with the same dataset as a run that was
never interrupted, with nothing lost or duplicated."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.engine.conftest import one_turn_job, run_job


def seir_run(job: Path, out: Path, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | env
    return subprocess.Popen([sys.executable, "-m", "seir.engine.cli", "run", str(job), "--out", str(out)],
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=environ)


def kill_group(process: subprocess.Popen[str]) -> None:
    """The driver and the local Ray it started (raylet, GCS, workers), as a lost machine would leave them."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_for(process: subprocess.Popen[str], marker: str, timeout_s: float) -> None:
    lines, deadline = [], time.monotonic() + timeout_s
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        if marker in line:
            return
        assert time.monotonic() < deadline, "".join(lines[-20:])
    pytest.fail(f"the run ended before {marker!r}:\n" + "".join(lines[-30:]))


def dataset(out: Path) -> dict[str, object]:
    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        dialogues = con.execute("""
            SELECT d.dialogue_id, d.dialogue_key, ld.accepted,
                   list((t.question, t.answer, t.caption, t.image_key) ORDER BY t.turn_index)
            FROM dialogues d JOIN latest_decisions ld USING (dialogue_key)
            LEFT JOIN turns t USING (dialogue_key) GROUP BY ALL ORDER BY 1""").fetchall()
        duplicates = con.execute("SELECT count(*) - count(DISTINCT dialogue_key) FROM dialogues").fetchall()[0][0]
        latest = con.execute("""SELECT list((dialogue_key, accepted) ORDER BY dialogue_key) FROM version_dialogues
                                WHERE version = (SELECT max(version) FROM versions)""").fetchall()[0][0]
        finished = con.execute("SELECT count(*) FROM runs WHERE status = 'finished'").fetchall()[0][0]
    assert duplicates == 0 and finished >= 1
    return {"dialogues": dialogues, "version": latest}


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return one_turn_job(tmp_path_factory, "resume", shard_size=2)


@pytest.fixture(scope="module")
def uninterrupted(ray_local: None, job: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    run_job(job, out)
    return dataset(out)


def test_kill_minus_9_mid_run_then_rerun(job: Path, uninterrupted: dict[str, object], tmp_path: Path) -> None:
    first = seir_run(job, tmp_path)
    wait_for(first, "shards 1/2", timeout_s=300)
    kill_group(first)
    resumed = run_job(job, tmp_path)
    assert "resuming run" in resumed.log and "1 shards left" in resumed.log
    assert dataset(tmp_path) == uninterrupted


@pytest.mark.parametrize("point", ["run-begun", "shard-committed", "deduped", "version-row"])
def test_killed_at_a_failpoint_then_rerun(job: Path, uninterrupted: dict[str, object], tmp_path: Path,
                                          point: str) -> None:
    killed = seir_run(job, tmp_path, SEIR_FAILPOINT=point)
    assert killed.wait(timeout=600) == -signal.SIGKILL, killed.stderr.read() if killed.stderr else ""
    kill_group(killed)
    run_job(job, tmp_path)
    assert dataset(tmp_path) == uninterrupted
