"""An output made by an earlier seir, run again by this one on the same job, is reused whole: no dialogue made, no
model call computed, the same dataset (local Ray, tiny models, counts read from provenance).

The output is a fixture written by seir at commit 3bd000c (tests/fixtures/output-3bd000c/README.txt): seeds that bring
pictures (edits, a vision writer), one that brings a new picture in its second turn and one that brings none; 2 turns,
1 refinement round, best-of-2 answers. A change that moves any dialogue key (a prompt that renders differently, a
config field that joins the generation key, a tiny model that builds differently) fails here."""

from __future__ import annotations

import gzip
import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from seir.engine.run import Runner
from seir.engine.spec import load_job

pytestmark = pytest.mark.ray

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "output-3bd000c"
JOB = "existing.yaml"
DIALOGUES = 3


def _sql(out: Path, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        return con.execute(query, params or []).fetchall()


def _latest_version(out: Path) -> list[tuple[Any, ...]]:
    """(dialogue_id, dialogue_key, accepted) of the latest dataset version."""
    return _sql(out, """SELECT dialogue_id, dialogue_key, accepted FROM version_dialogues
                        WHERE version = (SELECT max(version) FROM versions) ORDER BY ALL""")


def copy_of_fixture(folder: Path) -> Path:
    """The fixture's job, seeds and output in ``folder``, the store unzipped as the old seir left it; the job."""
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("*.gz", "README.txt"))
    with gzip.open(FIXTURE / "out" / "provenance.duckdb.gz") as zipped, \
            (folder / "out" / "provenance.duckdb").open("wb") as store:
        shutil.copyfileobj(zipped, store)
    return folder / JOB


@dataclass
class Rerun:
    out: Path
    before_runs: set[str]  # the fixture's own runs
    before_version: list[tuple[Any, ...]]  # the fixture's latest version
    dry_log: str
    dry_forecast: Any
    log: str
    summary: dict[str, Any]
    forecast: Any

    @property
    def run_id(self) -> str:
        new = {r[0] for r in _sql(self.out, "SELECT run_id FROM runs")} - self.before_runs
        assert len(new) == 1, f"expected one new run, found {sorted(new)}"
        return new.pop()


@pytest.fixture(scope="module")
def rerun(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Rerun:
    """A copy of the fixture planned with --dry-run, then run again with its plan printed (as `seir refresh`)."""
    job = copy_of_fixture(tmp_path_factory.mktemp("existing") / "fixture")
    out = job.parent / "out"
    before_runs = {r[0] for r in _sql(out, "SELECT run_id FROM runs")}
    before_version = _latest_version(out)
    assert len(before_version) == DIALOGUES, before_version

    dry_stream = io.StringIO()
    dry = Runner(load_job(job), out, stream=dry_stream)
    assert dry.run(dry_run=True) is None
    assert {r[0] for r in _sql(out, "SELECT run_id FROM runs")} == before_runs, "a dry run must record no run"

    stream = io.StringIO()
    runner = Runner(load_job(job), out, stream=stream)
    summary = runner.run(show_plan=True)
    assert summary is not None
    return Rerun(out, before_runs, before_version, dry_stream.getvalue(), dry.forecast, stream.getvalue(), summary,
                 runner.forecast)


def test_the_dry_run_forecasts_no_computed_call(rerun: Rerun) -> None:
    plan = rerun.dry_log
    assert f"reuse {DIALOGUES} committed dialogues" in plan, plan
    for kind in ("make 0 dialogues for new seeds", "remake 0 dialogues whose seed changed",
                 "remake 0 dialogues whose generation config or models changed"):
        assert kind in plan, plan
    assert rerun.dry_forecast is not None and rerun.dry_forecast.known, plan
    assert all(role.computed_max == 0 for role in rerun.dry_forecast.roles.values()), plan
    assert "  total: 0 calls," in plan, plan


def test_the_rerun_makes_no_dialogue(rerun: Rerun) -> None:
    assert f"0 dialogues to make in 0 shards, {DIALOGUES} reused" in rerun.log, rerun.log
    assert f"reuse {DIALOGUES} committed dialogues" in rerun.log, rerun.log
    assert rerun.forecast is not None and all(r.computed_max == 0 for r in rerun.forecast.roles.values())
    for table in ("dialogues", "drafts", "shards"):
        made = _sql(rerun.out, f"SELECT count(*) FROM {table} WHERE run_id = ?", [rerun.run_id])[0][0]
        assert made == 0, f"the rerun wrote {made} rows of {table}"


def test_the_rerun_computes_no_model_call(rerun: Rerun) -> None:
    computed = _sql(rerun.out, "SELECT role, count(*) FROM model_calls WHERE run_id = ? AND NOT cached GROUP BY ALL "
                               "ORDER BY ALL", [rerun.run_id])
    assert computed == [], f"calls computed by the rerun, per role: {computed}"


def test_the_rerun_keeps_the_dataset_of_the_old_output(rerun: Rerun) -> None:
    version = rerun.summary["version"]
    assert _sql(rerun.out, "SELECT run_id FROM versions WHERE version = ?", [version]) == [(rerun.run_id,)]
    after = _latest_version(rerun.out)
    assert [row[:2] for row in after] == [row[:2] for row in rerun.before_version], "dialogue ids or keys moved"
    assert after == rerun.before_version, "the same dialogues are accepted and rejected differently"
