"""A budget caps a run: it stops at a shard boundary, commits what it made, writes a version marked partial and
says what the rest would cost; run again with a larger cap, it ends with the dataset an uncapped run makes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from seir.engine.query import versions
from seir.engine.run import Budget, Runner
from seir.engine.spec import load_job
from tests.engine.conftest import TOPICS, FinishedRun, job_dict, run_job, write_job
from tests.engine.run.test_resume import dataset

SCORES = "SELECT * FROM turn_final_scores ORDER BY ALL"


def test_a_call_budget_stops_at_a_shard_boundary_and_a_larger_one_finishes(ray_local: None,
                                                                            tmp_path: Path) -> None:
    spec = job_dict("budget", topics=TOPICS[:3], seir={"turns": 1, "rounds": 1},
                    execution={"shard_size": 1, "shards_in_flight": 1, "budget": {"calls": 1}})
    capped_job = write_job(tmp_path / "capped", spec)
    uncapped = run_job(write_job(tmp_path / "free", {**spec, "execution": {**spec["execution"], "budget": {}}}),
                       tmp_path / "free-out")
    out = tmp_path / "out"

    stream = io.StringIO()
    summary = Runner(load_job(capped_job), out, stream=stream).run()
    first = FinishedRun(out, summary, stream.getvalue(), capped_job)
    assert "budget reached (calls" in first.log and "stopped after 1 of 3 shards" in first.log
    assert "the other 2 would cost about" in first.log and "Run again with a larger cap" in first.log
    assert first.sql("SELECT status FROM shards ORDER BY position") == [("committed",), ("planned",), ("planned",)]
    assert first.sql("SELECT count(*) FROM dialogues") == [(1,)]
    assert first.sql("SELECT version, partial FROM versions") == [(1, True)]
    assert first.sql("SELECT status FROM runs") == [("partial",)]
    assert summary["partial"].startswith("budget reached")
    assert [row[2] for row in versions(out)[1]] == ["run (partial)"]

    stream = io.StringIO()
    Runner(load_job(capped_job), out, stream=stream, budget=Budget(calls=10**6)).run()
    assert "2 dialogues to make" in stream.getvalue() and "budget reached" not in stream.getvalue()
    second = FinishedRun(out, {}, stream.getvalue(), capped_job)
    assert second.sql("SELECT version, partial FROM versions ORDER BY 1") == [(1, True), (2, False)]
    assert dataset(out) == dataset(uncapped.out)
    assert second.sql(SCORES) == uncapped.sql(SCORES)


def test_a_budget_in_the_job_is_checked(tmp_path: Path) -> None:
    from seir.engine.spec import JobSpecError

    job = write_job(tmp_path, job_dict("bad-budget", execution={"budget": {"calls": 0}}))
    with pytest.raises(JobSpecError, match="budget"):
        load_job(job)


def test_a_target_of_accepted_dialogues_stops_at_a_shard_boundary_and_a_larger_one_goes_on(
        ray_local: None, tmp_path: Path) -> None:
    # Thresholds of 0 accept every dialogue the models finish, and no dedup method runs, so the counts below do not
    # depend on what the random weights write.
    spec = job_dict("target", topics=TOPICS[:6], seir={"turns": 1, "rounds": 1},
                    scoring={"thresholds": dict.fromkeys(("question", "text_content", "image_content",
                                                          "image_quality", "image_text_synergy"), 0.0)},
                    dedup={"methods": []}, execution={"shard_size": 2, "shards_in_flight": 1})
    job, out = write_job(tmp_path, spec), tmp_path / "out"

    stream = io.StringIO()
    summary = Runner(load_job(job), out, stream=stream, budget=Budget(accepted=3)).run()
    first = FinishedRun(out, summary, stream.getvalue(), job)
    accepted = first.sql("SELECT count(*) FROM version_dialogues WHERE accepted")[0][0]
    assert accepted >= 3 and accepted == first.sql("SELECT count(*) FROM dialogues WHERE failure = ''")[0][0]
    assert first.sql("SELECT status FROM shards ORDER BY position") == [("committed",), ("committed",),
                                                                        ("planned",)]
    assert "target reached" in summary["target"] and "from 4 seeds" in summary["target"]
    assert first.sql("SELECT status FROM runs") == [("finished",)]

    stream = io.StringIO()
    Runner(load_job(job), out, stream=stream, budget=Budget(accepted=6)).run()
    second = FinishedRun(out, {}, stream.getvalue(), job)
    assert "2 dialogues to make in 1 shards, 4 reused" in second.log
    assert second.sql("SELECT count(DISTINCT dialogue_key) FROM dialogues") == [(6,)]
    assert second.sql("SELECT r.run_id = max(r.run_id) OVER (), count(*) FROM shards s JOIN runs r USING (run_id) "
                      "WHERE s.status = 'committed' GROUP BY r.run_id ORDER BY 1") == [(False, 2), (True, 1)]
    assert second.sql("SELECT count(*) FROM version_dialogues WHERE version = 2") == [(6,)]
