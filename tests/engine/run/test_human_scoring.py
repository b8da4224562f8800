"""People's verdicts deciding acceptance: `seir rescore` under `scoring.human: override` changes exactly the
decisions the verdicts contradict, calling no model; under the default (`off`) they change nothing."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import yaml

from seir.engine.cli import main
from seir.engine.query import run_sql
from tests.engine.conftest import FinishedRun

DECISIONS = """SELECT d.dialogue_id, ld.accepted, ld.reason FROM dialogues d
               JOIN latest_decisions ld USING (dialogue_key) WHERE d.failure = '' ORDER BY d.dialogue_id"""


def rescore(out: Path, job: dict, folder: Path, name: str) -> dict[str, tuple[bool, str]]:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    assert main(["rescore", str(path), "--out", str(out)]) == 0
    return {i: (accepted, reason) for i, accepted, reason in run_sql(out, DECISIONS)[1]}


def test_rescore_with_people_overriding_changes_exactly_what_they_contradict(finished: FinishedRun,
                                                                              tmp_path: Path) -> None:
    out = Path(shutil.copytree(finished.out, tmp_path / "out"))
    job = yaml.safe_load(finished.job.read_text())
    for seeds in job["seeds"].get("files", []):  # the job's seed files, beside the job as they were
        shutil.copy(finished.job.parent / seeds, tmp_path / seeds)
    # Thresholds that split the dialogues: text_content at the median of their worst turns, the rest at 0.
    worst = [v for _, v in run_sql(out, """SELECT dialogue_key, min(text_content) FROM turn_final_scores
                                           GROUP BY 1""")[1] if v is not None]
    job["scoring"]["thresholds"] = {**dict.fromkeys(job["scoring"]["thresholds"], 0.0),
                                    "text_content": statistics.median(worst)}
    before = rescore(out, job, tmp_path, "judge-alone")
    accepted = sorted(i for i, (ok, _) in before.items() if ok)
    rejected = sorted(i for i, (ok, _) in before.items() if not ok)
    assert len(accepted) >= 3 and rejected, before
    verdicts = [
        {"dialogue_id": accepted[0], "verdict": "reject", "note": "wrong facts"},  # contradicts
        {"dialogue_id": accepted[1], "verdict": "accept"},  # agrees
        {"dialogue_id": accepted[2], "turn": 1, "dimension": "text_content", "score": 0},  # contradicts
        {"dialogue_id": rejected[0], "verdict": "accept"},  # contradicts
    ]
    path = tmp_path / "verdicts.jsonl"
    path.write_text("\n".join(json.dumps(v) for v in verdicts) + "\n")
    assert main(["verdicts", "import", "--out", str(out), str(path)]) == 0
    calls = run_sql(out, "SELECT count(*) FROM model_calls")[1]
    assert rescore(out, job, tmp_path, "people-off") == before  # scoring.human: off, the default
    after = rescore(out, {**job, "scoring": {**job["scoring"], "human": "override"}}, tmp_path, "people-decide")
    assert run_sql(out, "SELECT count(*) FROM model_calls")[1] == calls  # decided again without any model
    changed = {i for i in before if before[i] != after[i]}
    assert changed == {accepted[0], accepted[2], rejected[0]}
    assert after[accepted[0]] == (False, "dialogue: rejected by a person")
    assert after[accepted[2]][1].startswith("turn 1: text_content 0.00 <")
    assert after[rejected[0]] == (True, "")


def test_a_refresh_keeps_each_verdict_on_the_draft_it_judged(finished: FinishedRun, tmp_path: Path) -> None:
    """One seed's text changes and a refresh makes its dialogue again (a new key, the same id): the verdicts given
    on the old one stay on it and its drafts, and decide nothing about the new one; a verdict on a dialogue the
    refresh kept still decides it."""
    out = Path(shutil.copytree(finished.out, tmp_path / "out"))
    job_dir = Path(shutil.copytree(finished.job.parent, tmp_path / "job", ignore=shutil.ignore_patterns("out")))
    moved = FinishedRun(out, finished.summary, finished.log, finished.job)
    latest = """SELECT dialogue_id, dialogue_key FROM version_dialogues
                WHERE version = (SELECT max(version) FROM versions)"""
    keys = dict(moved.sql(latest))
    kept_id = next(i for i in sorted(keys) if i != "yak-day")
    draft = moved.sql("SELECT draft_key FROM drafts WHERE dialogue_key = ? AND best LIMIT 1", [keys["yak-day"]])
    verdicts = tmp_path / "verdicts.jsonl"
    verdicts.write_text("\n".join(json.dumps(v) for v in [
        {"dialogue_id": "yak-day", "turn": 1, "dimension": "image_quality", "score": 5, "draft_key": draft[0][0]},
        {"dialogue_id": "yak-day", "verdict": "reject"}, {"dialogue_id": kept_id, "verdict": "reject"}]))
    assert main(["verdicts", "import", "--out", str(out), str(verdicts)]) == 0
    before = run_sql(out, "SELECT * FROM human_verdicts ORDER BY verdict_key")[1]
    seeds = job_dir / "seeds.jsonl"
    seeds.write_bytes(seeds.read_bytes().replace(b"a winter day", b"a spring day"))  # a bad line is not UTF-8
    job = yaml.safe_load((job_dir / finished.job.name).read_text())
    job["scoring"]["human"] = "override"
    (job_dir / "override.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    assert main(["refresh", str(job_dir / "override.yaml"), "--out", str(out)]) == 0
    after = dict(moved.sql(latest))
    assert after["yak-day"] != keys["yak-day"] and after[kept_id] == keys[kept_id]
    assert run_sql(out, "SELECT * FROM human_verdicts ORDER BY verdict_key")[1] == before
    assert moved.sql("SELECT count(*) FROM drafts WHERE draft_key = ?", [draft[0][0]]) == [(1,)]
    decided = dict(run_sql(out, "SELECT dialogue_key, reason FROM latest_decisions")[1])
    assert decided[after[kept_id]] == "dialogue: rejected by a person"
    assert decided[after["yak-day"]] != "dialogue: rejected by a person"
