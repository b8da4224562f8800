"""A stage of one's own, named in the job and kept in a file outside seir (jobs/stages/plan.py, copied beside a test
job): drafted, judged on the dimension it declares, refined, gated, recorded with its stages, handed on to the
answer's writer, exported as pairs whose prompt is its writer's request, shown by lineage in the job's order, and
rescored and refreshed like a built-in stage."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from seir.engine.export import ExportOptions, export
from seir.engine.query import format_lineage, lineage
from seir.engine.run import Runner
from seir.engine.run.planning import prompt_fingerprint
from seir.engine.spec import load_job
from tests.engine.conftest import TOPICS, FinishedRun, job_dict, run_job, write_job
from tests.engine.export.test_export import assert_pair_prompts_are_the_writers_requests, writer_request

REPO = Path(__file__).resolve().parents[3]
STAGES = ["question", "stages.plan:PlanStage", "answer", "image"]
DIMENSIONS = ("question", "text_quality", "text_content", "image_content", "image_quality", "image_text_synergy")


def plan_job(folder: Path, judge_tokens: int = 8) -> Path:
    """The tiny job with the plan stage between question and answer (two candidates a round), in ``folder`` beside
    a copy of the stage's file; the judge alone scores, and a gate of 5 that no draft reaches refines every stage."""
    shutil.copytree(REPO / "jobs" / "stages", folder / "stages", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    job = job_dict("own-stage", topics=TOPICS[:2],
                   seir={"stages": STAGES, "gate_default": 5.0, "candidates": {"plan": 2}},
                   scoring={"weights": {d: {"judge": 1.0} for d in DIMENSIONS},
                            "thresholds": dict.fromkeys(DIMENSIONS, 0.0)})
    for role in ("embed", "clip"):
        job["roles"].pop(role)
    job["roles"]["judge"]["sampling"] = {"max_new_tokens": judge_tokens}
    return write_job(folder, job)


@pytest.fixture(scope="module")
def planned(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    folder = tmp_path_factory.mktemp("own-stage")
    return run_job(plan_job(folder), folder / "out")


def test_the_plan_is_drafted_judged_on_its_dimension_refined_and_recorded(planned: FinishedRun) -> None:
    rounds = planned.sql("SELECT turn_index, round, count(*) FROM drafts WHERE stage = 'plan' GROUP BY ALL "
                         "ORDER BY ALL")
    assert {(turn, rnd) for turn, rnd, _ in rounds} == {(t, r) for t in (0, 1) for r in (0, 1)}
    assert {n for _, _, n in rounds} == {4}  # two dialogues, two candidates each
    dimensions = planned.sql("""SELECT DISTINCT s.dimension FROM scores s JOIN drafts dr USING (draft_key)
                                WHERE dr.stage = 'plan' AND s.scorer = 'combined'""")
    assert dimensions == [("text_quality",)]
    assert planned.sql("SELECT count(*) FROM drafts WHERE stage = 'plan' AND best") == [(4,)]
    [(stages,)] = planned.sql("SELECT stages FROM runs WHERE kind = 'run'")
    assert '"name": "plan"' in stages and stages.index('"question"') < stages.index('"plan"') < \
        stages.index('"answer"')


def test_the_kept_plan_is_in_the_answer_writers_request(planned: FinishedRun) -> None:
    kept = dict(((key, turn), text) for key, turn, text in planned.sql(
        "SELECT dialogue_key, turn_index, text FROM drafts WHERE stage = 'plan' AND best"))
    answers = planned.sql("SELECT draft_key, dialogue_key, turn_index FROM drafts WHERE stage = 'answer' "
                          "AND round = 0 AND candidate = 0")
    assert len(answers) == 4
    for draft_key, dialogue_key, turn in answers:
        sent = writer_request(planned, draft_key)
        assert sent is not None
        system = " ".join(p["text"] for p in sent[0][0]["content"] if p["text"])
        assert f"Follow this plan in your answer:\n{kept[(dialogue_key, turn)]}" in system


def test_plan_pairs_export_with_the_plan_writers_request_as_prompt(planned: FinishedRun, tmp_path: Path) -> None:
    export(planned.out, tmp_path / "plans", ExportOptions("trl-dpo", stages=("plan",), pairs="siblings"),
           stream=io.StringIO())
    pairs = assert_pair_prompts_are_the_writers_requests(planned, tmp_path / "plans")
    assert pairs and {p["stage"] for p in pairs} == {"plan"}
    assert all("numbered plan" in str(p["prompt"]) for p in pairs)


def test_lineage_shows_the_plan_between_question_and_answer(planned: FinishedRun) -> None:
    [(dialogue_id,)] = planned.sql("SELECT min(dialogue_id) FROM dialogues")
    tree = lineage(planned.out, dialogue_id)
    first_turn = [d["stage"] for d in tree["drafts"] if d["turn_index"] == 0]
    order = list(dict.fromkeys(first_turn))
    assert order == ["question", "plan", "answer", "image"]
    assert "plan round 0 candidate 1" in format_lineage(tree)


def test_a_rerun_computes_nothing_and_a_rescore_rescores_the_plan(planned: FinishedRun, tmp_path: Path) -> None:
    output = Path(shutil.copytree(planned.out, tmp_path / "out"))
    stream = io.StringIO()
    Runner(load_job(planned.job), output, stream=stream).run()
    assert "0 dialogues to make in 0 shards, 2 reused" in stream.getvalue()
    assert _sql(output, "SELECT count(*) FROM model_calls WHERE NOT cached AND run_id = "
                        "(SELECT arg_max(run_id, started_at) FROM runs)") == [(0,)]
    # Another critique length: every stage's scores are stale, and the kept drafts are scored again.
    Runner(load_job(plan_job(tmp_path / "changed", judge_tokens=6)), output, stream=io.StringIO()).rescore()
    rescored = dict(_sql(output, """
        SELECT dr.stage, count(*) FROM scores s JOIN drafts dr USING (draft_key)
        WHERE s.run_id = (SELECT run_id FROM runs WHERE kind = 'rescore') AND s.scorer = 'combined'
        GROUP BY ALL"""))
    assert rescored.get("plan") == 4 and rescored.get("question") == 4, rescored


def _sql(out: Path, query: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        return con.execute(query).fetchall()


def test_the_plan_stages_prompts_key_its_dialogues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed plan prompt changes the job's prompt fingerprint (so every key of what it made); the same prompt
    keeps it."""
    spec = load_job(plan_job(tmp_path))
    before = prompt_fingerprint(spec)
    assert prompt_fingerprint(load_job(plan_job(tmp_path / "again"))) == before
    plan = type(spec.seir.stage_units()[1])
    written = plan._messages
    monkeypatch.setattr(plan, "_messages", lambda self, *a: [*written(self, *a), {"role": "user", "content": "!"}])
    assert prompt_fingerprint(spec) != before
