"""kill -9 in the middle of a run, run the same command again: it resumes and ends with the same dataset as a run
that was never interrupted, with nothing lost or duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.engine.conftest import TOPICS, job_dict, write_job


def seir(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "seir.engine.cli", *args], stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})


def wait_for(process: subprocess.Popen[str], marker: str, timeout_s: float) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout_s
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        if marker in line:
            return lines
        assert time.monotonic() < deadline, "".join(lines[-20:])
    pytest.fail(f"the run ended before {marker!r}:\n" + "".join(lines[-30:]))


def dataset(out: Path) -> dict[str, tuple]:
    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        rows = con.execute("""
            SELECT d.dialogue_id, d.dialogue_key, ld.accepted,
                   list((t.question, t.answer, t.caption, t.image_key) ORDER BY t.turn_index)
            FROM dialogues d JOIN latest_decisions ld USING (dialogue_key)
            LEFT JOIN turns t USING (dialogue_key) GROUP BY ALL""").fetchall()
        duplicates = con.execute("""SELECT count(*) - count(DISTINCT dialogue_key) FROM dialogues""").fetchone()[0]
        latest = con.execute("""SELECT list((dialogue_key, accepted) ORDER BY dialogue_key) FROM version_dialogues
                                WHERE version = (SELECT max(version) FROM versions)""").fetchone()[0]
    assert duplicates == 0
    return {"dialogues": {r[0]: r[1:] for r in rows}, "version": latest}


def test_kill_minus_9_then_rerun_equals_an_uninterrupted_run(tiny_models: dict, tmp_path: Path) -> None:
    job = write_job(tmp_path, job_dict("resume", topics=TOPICS[:6], execution={"shard_size": 2,
                                                                              "shards_in_flight": 1}))
    interrupted = tmp_path / "interrupted"
    first = seir("run", str(job), "--out", str(interrupted))
    wait_for(first, "shards 1/3", timeout_s=300)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the local Ray it started
    first.wait()

    second = seir("run", str(job), "--out", str(interrupted))
    log = "".join(wait_for(second, "dataset version", timeout_s=300))
    assert second.wait(timeout=60) == 0
    assert "resuming run" in log and "2 shards left" in log

    clean = tmp_path / "clean"
    third = seir("run", str(job), "--out", str(clean))
    wait_for(third, "dataset version", timeout_s=300)
    assert third.wait(timeout=60) == 0

    resumed, uninterrupted = dataset(interrupted), dataset(clean)
    assert len(resumed["dialogues"]) == 6
    assert resumed == uninterrupted
