"""Incremental refreshes, rescoring and dataset versions on a real output folder (local Ray, tiny models).

Each test works on its own copy of a module's output, so it passes alone and in any order."""

from __future__ import annotations

import dataclasses
import io
import shutil
from pathlib import Path

import pytest

from seir.engine.query import diff
from seir.engine.run import Runner
from seir.engine.spec import load_job
from tests.engine.conftest import TOPICS, FinishedRun, job_dict, run_job, write_job


def last_run(run: FinishedRun) -> str:
    return run.sql("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")[0][0]


def computed_calls(run: FinishedRun, run_id: str) -> list[tuple[str, str]]:
    return run.sql("SELECT role, call_key FROM model_calls WHERE run_id = ? AND NOT cached ORDER BY ALL", [run_id])


def runner(job: Path, out: Path) -> tuple[Runner, io.StringIO]:
    stream = io.StringIO()
    return Runner(load_job(job), out, stream=stream), stream


def copy_of(run: FinishedRun, tmp_path: Path) -> FinishedRun:
    """A private copy of a module-wide output, for a test that writes to it."""
    return dataclasses.replace(run, out=Path(shutil.copytree(run.out, tmp_path / "out")))


@pytest.fixture(scope="module")
def base(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """4 seeds, run once."""
    folder = tmp_path_factory.mktemp("refresh")
    return run_job(write_job(folder, job_dict("refresh", topics=TOPICS[:4])), folder / "out")


@pytest.fixture(scope="module")
def grown(base: FinishedRun, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """A copy of ``base`` refreshed with 2 more seeds: 6 dialogues, 2 of them made by the refresh."""
    folder = tmp_path_factory.mktemp("refresh-grown")
    job = write_job(folder, job_dict("refresh", topics=TOPICS[:6]))
    out = Path(shutil.copytree(base.out, folder / "out"))
    refresh, log = runner(job, out)
    summary = refresh.run(show_plan=True)
    return FinishedRun(out, summary, log.getvalue(), job)


def test_refresh_with_no_change_makes_no_model_calls(base: FinishedRun, tmp_path: Path) -> None:
    run = copy_of(base, tmp_path)
    refresh, log = runner(run.job, run.out)
    refresh.run(show_plan=True)
    assert "reuse 4 committed dialogues" in log.getvalue()
    assert run.sql("SELECT count(*) FROM model_calls WHERE run_id = ?", [last_run(run)]) == [(0,)]


def test_dry_run_prints_the_plan_and_changes_nothing(base: FinishedRun, tmp_path: Path) -> None:
    run = copy_of(base, tmp_path)
    bigger = write_job(tmp_path, job_dict("refresh", topics=TOPICS[:5], seir={"rounds": 2}))
    runs_before = run.sql("SELECT count(*) FROM runs")
    refresh, log = runner(bigger, run.out)
    assert refresh.run(dry_run=True) is None
    plan = log.getvalue()
    assert "make 1 dialogues for new seeds" in plan and "remake 4 dialogues whose generation config" in plan
    assert "seir.rounds: 1 -> 2" in plan
    assert "cost at this output's measured rates (upper bounds):" in plan
    llm = next(line for line in plan.splitlines() if line.startswith("  llm: ") and "tokens" in line)
    assert int(llm.split(" calls, ")[1].split(" tokens")[0]) > 0, llm  # the llm's measured tokens per call
    assert run.sql("SELECT count(*) FROM runs") == runs_before


def test_adding_seeds_makes_exactly_the_calls_of_the_new_seeds(grown: FinishedRun, tmp_path: Path) -> None:
    assert "make 2 dialogues for new seeds" in grown.log and "reuse 4" in grown.log
    made = computed_calls(grown, last_run(grown))
    alone = run_job(write_job(tmp_path / "alone", job_dict("refresh", topics=TOPICS[4:6])), tmp_path / "alone-out")
    assert made and made == computed_calls(alone, last_run(alone))


def test_threshold_change_redecides_without_any_model_call(grown: FinishedRun, tmp_path: Path) -> None:
    run = copy_of(grown, tmp_path)
    lenient = job_dict("refresh", topics=TOPICS[:6])
    lenient["scoring"]["thresholds"] = dict.fromkeys(lenient["scoring"]["thresholds"], 0.0)
    before = run.sql("SELECT max(version) FROM versions")[0][0]
    rescore, log = runner(write_job(tmp_path, lenient), run.out)
    summary = rescore.rescore()
    assert "rescoring 0 of 6" in log.getvalue()
    assert run.sql("SELECT count(*) FROM model_calls WHERE run_id = ?", [last_run(run)]) == [(0,)]
    failed = run.sql("SELECT count(*) FROM dialogues d JOIN version_dialogues v USING (dialogue_key) "
                     "WHERE v.version = ? AND d.failure <> ''", [summary["version"]])[0][0]
    dropped = run.sql("SELECT count(*) FROM dedup WHERE run_id = ?", [last_run(run)])[0][0]
    assert summary["accepted"] == 6 - failed - dropped
    changes = diff(run.out, before, summary["version"])
    assert not changes["changed"] and not changes["removed"]


def test_rescore_with_another_judge_calls_only_the_scorers(grown: FinishedRun, tmp_path: Path) -> None:
    run = copy_of(grown, tmp_path)
    other_judge = job_dict("refresh", topics=TOPICS[:6])
    other_judge["roles"]["judge"]["sampling"] = {"max_new_tokens": 5}
    rescore, log = runner(write_job(tmp_path, other_judge), run.out)
    rescore.rescore()
    assert "rescoring 6 of 6" in log.getvalue()
    run_id = last_run(run)
    roles = {role for role, _ in computed_calls(run, run_id)}
    assert "judge" in roles and not roles & {"llm", "image"}
    rescored = run.sql("SELECT count(DISTINCT dialogue_key) FROM turn_scores WHERE run_id = ?", [run_id])
    assert rescored == [(6,)]


def test_removed_seeds_leave_the_version_but_stay_in_provenance(grown: FinishedRun, tmp_path: Path) -> None:
    run = copy_of(grown, tmp_path)
    shrunk = write_job(tmp_path, job_dict("refresh", topics=TOPICS[:3]))
    refresh, log = runner(shrunk, run.out)
    summary = refresh.run(show_plan=True)
    assert "drop 3 dialogues whose seed is gone" in log.getvalue()
    candidates = run.sql("SELECT count(*) FROM version_dialogues WHERE version = ?", [summary["version"]])
    assert candidates == [(3,)]
    assert run.sql("SELECT count(DISTINCT seed_key) FROM dialogues")[0][0] >= 6
    earlier = run.sql("SELECT min(version) FROM versions")[0][0]
    assert (run.out / "versions" / f"v{earlier:04d}" / "accepted.parquet").is_file()
