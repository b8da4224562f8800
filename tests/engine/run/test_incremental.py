"""Refreshes recompute exactly what changed: every model call is keyed by its own inputs, a remade dialogue replays
its loop through the call cache, and the result equals a fresh run with the new config (local Ray, tiny models,
counts read from provenance)."""

from __future__ import annotations

import importlib.util
import inspect
import io
import shutil
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from seir.engine.query import format_lineage, lineage
from seir.engine.run import Runner
from seir.engine.spec import load_job
from seir.operators.stages import prompts
from tests.engine.conftest import TOPICS, job_dict, write_job

NAME = "incremental"


def _job(folder: Path, **overrides: Any) -> Path:
    return write_job(folder, job_dict(NAME, topics=TOPICS[:2], **overrides))


def _run(job: Path, out: Path, refresh: bool = False, cache: Path | None = None) -> tuple[Runner, str]:
    stream = io.StringIO()
    runner = Runner(load_job(job), out, stream=stream, cache_dir=cache)
    runner.run(show_plan=refresh)
    return runner, stream.getvalue()


def _sql(out: Path, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        return con.execute(query, params or []).fetchall()


def _last_run(out: Path) -> str:
    return _sql(out, "SELECT run_id FROM runs WHERE kind = 'run' ORDER BY started_at DESC LIMIT 1")[0][0]


def _calls_by_stage(out: Path, run_id: str) -> dict[tuple[str, str, bool], int]:
    """(stage, role, cached) -> calls the run made for the drafts it committed."""
    rows = _sql(out, """SELECT dr.stage, c.role, c.cached, count(*) FROM drafts dr, unnest(dr.call_keys) AS u(k)
                        JOIN model_calls c ON c.call_key = u.k AND c.run_id = dr.run_id
                        WHERE dr.run_id = ? GROUP BY ALL""", [run_id])
    return {(stage, role, cached): n for stage, role, cached, n in rows}


def _computed_keys(out: Path, run_id: str) -> set[str]:
    return {r[0] for r in _sql(out, "SELECT call_key FROM model_calls WHERE run_id = ? AND NOT cached", [run_id])}


def _all_keys(out: Path, run_id: str) -> set[str]:
    return {r[0] for r in _sql(out, "SELECT call_key FROM model_calls WHERE run_id = ?", [run_id])}


def _dataset(out: Path) -> list[tuple[Any, ...]]:
    """What a fresh run must equal: the latest version's texts, image keys, scores (rounded) and decisions."""
    rows = _sql(out, """
        SELECT d.dialogue_id, t.turn_index, t.question, t.answer, t.caption, t.image_key,
               [round(x, 5) FOR x IN [f.text_content, f.image_content, f.image_quality, f.image_text_synergy,
                                      f.question]], ld.accepted, ld.reason
        FROM version_dialogues vd JOIN dialogues d USING (dialogue_key) JOIN turns t USING (dialogue_key)
        JOIN turn_final_scores f USING (dialogue_key, turn_index) JOIN latest_decisions ld USING (dialogue_key)
        WHERE vd.version = (SELECT max(version) FROM versions) ORDER BY ALL""")
    assert rows
    return rows


@pytest.fixture(scope="module")
def finished(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("incremental")
    _run(_job(folder), folder / "out")
    return folder / "out"


@pytest.fixture
def output(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished output, so every test starts from the same state, alone or in any order."""
    return Path(shutil.copytree(finished, tmp_path / "out"))


def _refresh_equals_fresh(output: Path, tmp_path: Path, **overrides: Any) -> tuple[Runner, str, str]:
    base_run = _last_run(output)
    changed = _job(tmp_path / "changed", **overrides)
    runner, log = _run(changed, output, refresh=True)
    refresh_run = _last_run(output)
    _, _ = _run(changed, tmp_path / "fresh")
    assert _dataset(output) == _dataset(tmp_path / "fresh")
    # Computed calls are exactly the ideal: those of a fresh run with the new config that the first run lacked.
    ideal = _all_keys(tmp_path / "fresh", _last_run(tmp_path / "fresh")) - _all_keys(output, base_run)
    assert _computed_keys(output, refresh_run) == ideal
    return runner, log, refresh_run


def _forecast_holds(runner: Runner, output: Path, run_id: str) -> None:
    """Where the printed plan claimed certainty, the run agrees."""
    assert runner.forecast is not None and runner.forecast.known
    calls = _calls_by_stage(output, run_id)
    for role, predicted in runner.forecast.roles.items():
        computed = sum(n for (_, r, cached), n in calls.items() if r == role and not cached)
        cached = sum(n for (_, r, cached), n in calls.items() if r == role and cached)
        assert computed <= predicted.computed_max, role
        assert predicted.cached_min <= cached <= predicted.cached_max + predicted.computed_max, role
    for stage in runner.forecast.unchanged_stages:
        assert not any(n for (s, _, cached), n in calls.items() if s == stage and not cached)


def test_image_steps_change_recomputes_only_image_stages(output: Path, tmp_path: Path) -> None:
    runner, log, run_id = _refresh_equals_fresh(output, tmp_path, seir={"image_steps": 2})
    calls = _calls_by_stage(output, run_id)
    assert not any(n for (stage, _, cached), n in calls.items() if stage != "image" and not cached)
    assert calls[("question", "llm", True)] and calls[("answer", "judge", True)]
    assert calls[("image", "image", False)] and not calls.get(("image", "image", True))
    assert "remake 2 dialogues whose generation config" in log and "question, answer stages: every call" in log
    _forecast_holds(runner, output, run_id)


def test_judge_change_keeps_first_question_drafts(output: Path, tmp_path: Path) -> None:
    job = job_dict(NAME)
    judge = {**job["roles"]["judge"], "sampling": {"max_new_tokens": 6}}
    runner, _, run_id = _refresh_equals_fresh(output, tmp_path, roles={"judge": judge})
    first_questions = _sql(output, """
        SELECT bool_and(c.cached) FROM drafts dr, unnest(dr.call_keys) AS u(k)
        JOIN model_calls c ON c.call_key = u.k AND c.run_id = dr.run_id
        WHERE dr.run_id = ? AND dr.stage = 'question' AND dr.round = 0 AND dr.turn_index = 0 AND c.role = 'llm'""",
                           [run_id])
    assert first_questions == [(True,)]
    assert _calls_by_stage(output, run_id).get(("question", "judge", False))
    _forecast_holds(runner, output, run_id)


def test_an_edit_that_renders_the_same_prompts_computes_nothing(output: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    source = inspect.getsource(prompts)
    edited = tmp_path / "edited_prompts.py"
    edited.write_text("# A comment added by a refactor.\n" + source.replace("\n\n\n", "\n\n\n# spacing\n\n\n", 1))
    spec = importlib.util.spec_from_file_location("edited_prompts", edited)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "edited_prompts", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert module.prompt_fingerprint() == prompts.prompt_fingerprint()
    monkeypatch.setattr("seir.engine.run.planning.prompts", module)
    for stage, names in (("question", ("question_messages",)), ("answer", ("answer_messages", "caption_messages"))):
        for name in names:  # the stages' prompts, as the loop's stages build them
            monkeypatch.setattr(f"seir.operators.stages.{stage}.{name}", getattr(module, name))
    _, log = _run(_job(tmp_path / "same"), output, refresh=True)
    assert "reuse 2 committed dialogues" in log
    assert _sql(output, "SELECT count(*) FROM model_calls WHERE run_id = ? AND NOT cached", [_last_run(output)]) \
        == [(0,)]
    reworded = source.replace("Rewrite it as the first question", "Turn it into the first question")
    assert reworded != source
    edited.write_text(reworded)
    spec.loader.exec_module(module)
    assert module.prompt_fingerprint() != prompts.prompt_fingerprint()


def test_a_second_output_sharing_the_cache_computes_nothing(ray_local: None, tmp_path: Path) -> None:
    job, cache = _job(tmp_path / "job"), tmp_path / "cache"
    _run(job, tmp_path / "staging", cache=cache)
    _run(job, tmp_path / "production", cache=cache)
    production = tmp_path / "production"
    assert _sql(production, "SELECT count(*) FILTER (WHERE NOT cached), count(*) FROM model_calls")[0][0] == 0
    assert _dataset(production) == _dataset(tmp_path / "staging")
    for (path,) in _sql(production, "SELECT path FROM images"):
        assert (production / path).is_file()
    import sqlite3

    with sqlite3.connect(cache / "calls.sqlite") as con:
        first = {row[0] for row in con.execute("SELECT DISTINCT first_run_id FROM call_outputs")}
    assert first == {_last_run(tmp_path / "staging")}


def test_near_duplicate_seeds_are_dropped_before_any_model_call(ray_local: None, tmp_path: Path) -> None:
    seeds = [{"id": "leopard", "text": "How do snow leopards hunt in winter, and can you draw one?", "turns": 1},
             {"id": "leopard-again", "text": "How do snow-leopards hunt in winter and can you draw one?",
              "turns": 1}]
    job = write_job(tmp_path, job_dict(NAME, topics=[], seeds={"topics": [], "templates": []}), seeds)
    out = tmp_path / "out"
    _, log = _run(job, out)
    assert "1 near-duplicate seeds dropped" in log
    assert _sql(out, "SELECT dialogue_id FROM dialogues") == [("leopard",)]
    assert _sql(out, "SELECT seed_id, kept_seed_id, similarity FROM seed_duplicates") == [
        ("leopard-again", "leopard", 1.0)]
    assert _sql(out, "SELECT count(*) FROM dialogues WHERE seed_key IN (SELECT seed_key FROM seed_duplicates)") \
        == [(0,)]
    assert "near-duplicate of seed leopard" in format_lineage(lineage(out, "leopard-again"))
    assert "leopard-again" in format_lineage(lineage(out, "leopard"))


@pytest.mark.parametrize("bad", ["file", "corrupt"])
def test_an_unusable_cache_folder_is_refused_with_what_to_do(tmp_path: Path, bad: str) -> None:
    from seir.engine.errors import SeirError
    from seir.engine.store import SharedCallCache

    target = tmp_path / "cache"
    if bad == "file":
        target.write_text("not a folder")
    else:
        target.mkdir()
        (target / SharedCallCache.FILENAME).write_bytes(b"not a database" * 100)
    expected = (r"cannot use .* as a call cache.*folder seir can write" if bad == "file" else
                r"the call cache .*calls\.sqlite is damaged: file is not a database.*move calls\.sqlite aside")
    with pytest.raises(SeirError, match=expected):
        SharedCallCache(target)
