"""A whole job on local Ray with the real tiny models, checked through the provenance store with SQL."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from seir.engine.spec import load_job
from seir.engine.store import OutputBusy, OutputLock
from tests.engine.conftest import BAD_SEEDS, FinishedRun, job_dict, run_job, write_job


def test_run_reports_progress_and_summary(finished: FinishedRun) -> None:
    assert finished.summary["accepted"] + finished.summary["rejected"] == 6
    assert finished.summary["quarantined"] == len(BAD_SEEDS)
    assert "run 6/6 dialogues (100%)" in finished.log and "shards 3/3 |" in finished.log
    assert "mean score by round" in finished.log and "calls llm" in finished.log


def test_every_accepted_dialogue_traces_back_to_its_seed(finished: FinishedRun) -> None:
    traced = finished.sql("""
        SELECT v.dialogue_id, s.text, count(DISTINCT dr.draft_key), count(DISTINCT mc.call_key)
        FROM version_dialogues v
        JOIN dialogues d USING (dialogue_key)
        JOIN seeds s USING (seed_key)
        JOIN drafts dr ON dr.dialogue_key = d.dialogue_key
        JOIN model_calls mc ON list_contains(dr.call_keys, mc.call_key)
        WHERE v.version = 1 AND v.accepted GROUP BY ALL""")
    accepted = finished.sql("SELECT count(*) FROM latest_decisions WHERE accepted")[0][0]
    assert len(traced) == accepted
    assert all(text and drafts >= 3 and calls >= 1 for _, text, drafts, calls in traced)
    # Each kept stage draft of each turn is exactly one draft.
    kept = finished.sql("""SELECT dialogue_key, turn_index, stage, count(*) FILTER (WHERE best) FROM drafts
                           GROUP BY ALL HAVING count(*) FILTER (WHERE best) <> 1""")
    failed_stages = finished.sql("SELECT count(*) FROM dialogues WHERE failure <> ''")[0][0]
    assert len(kept) <= failed_stages


def test_rounds_and_gate_follow_the_job(finished: FinishedRun) -> None:
    rounds = load_job(finished.job).seir.rounds
    per_stage = finished.sql("""SELECT dialogue_key, turn_index, stage, count(*), max(round),
                                       list(passed ORDER BY round), list(critique ORDER BY round)
                                FROM drafts GROUP BY ALL""")
    assert per_stage
    for _, _, _, n, last_round, passed, _ in per_stage:
        assert n == last_round + 1 <= rounds + 1
        assert not any(passed[:-1]), "a stage went on refining after its draft passed the gate"
    # The image stage judged the final image too: every image draft has scores.
    unscored = finished.sql("""SELECT count(*) FROM drafts d WHERE stage = 'image' AND ok
                               AND NOT EXISTS (SELECT 1 FROM scores s WHERE s.draft_key = d.draft_key)""")
    assert unscored == [(0,)]


def test_thresholds_decide_acceptance(finished: FinishedRun) -> None:
    thresholds = load_job(finished.job).scoring.thresholds
    turns = finished.sql("""SELECT d.turns_accepted[t.turn_index + 1], t.question, t.text_content, t.image_content,
                                   t.image_quality, t.image_text_synergy, d.accepted
                            FROM turn_final_scores t JOIN latest_decisions d USING (dialogue_key)""")
    names = ["question", "text_content", "image_content", "image_quality", "image_text_synergy"]
    for accepted, *values, dialogue_accepted in turns:
        meets = all(v is not None and v >= thresholds[n] for n, v in zip(names, values, strict=True))
        assert accepted == meets
        if not accepted:
            assert not dialogue_accepted
    reasons = finished.sql("SELECT reason FROM latest_decisions WHERE NOT accepted")
    assert all(" < " in r or "no usable draft" in r for (r,) in reasons)


def test_calls_are_batched_across_dialogues(finished: FinishedRun) -> None:
    # Shards hold 2 dialogues: the first question of a shard's dialogues goes out as one call of 2 requests.
    batches = finished.sql("""SELECT role, count(*), count(DISTINCT batch_id), max(batch_size)
                              FROM model_calls WHERE NOT cached GROUP BY role""")
    for role, calls, n_batches, largest in batches:
        assert largest >= 2, role
        assert n_batches < calls, role
    judge = finished.sql("SELECT max(batch_size) FROM model_calls WHERE role = 'judge' AND method = 'score'")[0][0]
    assert judge >= 2


def test_dataset_version_is_parquet_with_chat_messages_and_stored_images(finished: FinishedRun) -> None:
    version = finished.out / "versions" / "v0001"
    manifest = json.loads((version / "manifest.json").read_text())
    accepted = pq.read_table(version / "accepted.parquet").to_pylist()
    rejected = pq.read_table(version / "rejected.parquet").to_pylist()
    assert [d["dialogue_id"] for d in accepted] == [d["dialogue_id"] for d in manifest["dialogues"]]
    assert len(accepted) + len(rejected) == 6 and all(r["reason"] for r in rejected)
    for dialogue in accepted + rejected:
        roles = [m["role"] for m in dialogue["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles
        for message in dialogue["messages"]:
            for part in message["content"]:
                if part["type"] == "image":
                    assert (finished.out / part["image"]).is_file()
    stored = finished.sql("SELECT path FROM images")
    assert stored and all((finished.out / p).is_file() for (p,) in stored)


def test_bad_seed_lines_are_quarantined_with_file_line_and_field(finished: FinishedRun) -> None:
    rows = finished.sql("SELECT source, line, field, reason FROM quarantine ORDER BY line")
    assert [(line, field) for _, line, field, _ in rows] == [
        (3, "(line)"), (4, "text"), (5, "text"), (6, "(line)"), (7, "images[0]")]
    assert all(source.endswith("seeds.jsonl") for source, *_ in rows)


def test_running_the_same_command_again_recomputes_nothing(finished: FinishedRun, tmp_path: Path) -> None:
    finished = dataclasses.replace(finished, out=Path(shutil.copytree(finished.out, tmp_path / "out")))  # its own
    calls_before = finished.sql("SELECT count(*) FROM model_calls")[0][0]
    again = run_job(finished.job, finished.out)
    assert "0 dialogues to make" in again.log
    assert again.sql("SELECT count(*) FROM model_calls")[0][0] == calls_before
    versions = again.sql("""SELECT list((dialogue_key, accepted) ORDER BY dialogue_key) FROM version_dialogues
                            GROUP BY version ORDER BY version""")
    assert len(versions) == 2 and versions[0] == versions[1]


def test_a_second_writer_is_refused(finished: FinishedRun) -> None:
    with OutputLock(finished.out), pytest.raises(OutputBusy, match="is being written by seir pid"):
        run_job(finished.job, finished.out)


def test_empty_replies_become_failed_drafts_and_are_retried(ray_local: None, tmp_path: Path) -> None:
    job = job_dict("flaky", topics=["Coral", "Yak"])
    job["roles"]["llm"] = {**job["roles"]["llm"], "backend": "tests.engine.fault_backends:EmptyWhenGreedy",
                           "sampling": {"max_new_tokens": 12, "temperature": 0.0}}
    job["seir"] = {**job["seir"], "turns": 1, "rounds": 2}
    run = run_job(write_job(tmp_path, job), tmp_path / "out")
    failed = run.sql("SELECT stage, round, reason FROM drafts WHERE NOT ok ORDER BY ALL")
    assert failed and all(reason == f"empty {stage}" or reason == "empty caption" for stage, _, reason in failed)
    assert {r for _, r, _ in failed} >= {0}
    retried = run.sql("SELECT count(*) FROM drafts WHERE ok AND stage = 'question' AND round = 1")[0][0]
    assert retried == 2, "every failed first question was retried, with sampling, in the next round"
