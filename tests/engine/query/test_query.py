"""seir sql, lineage, versions and diff, and the store's schema handling."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from seir.engine.cli import main
from seir.engine.query import QueryRefused, format_lineage, lineage, run_sql
from seir.engine.run import Runner
from seir.engine.spec import load_job
from seir.engine.store import SCHEMA_VERSION, ProvenanceStore, StoreError
from seir.engine.store.schema import SCHEMA_V1
from tests.engine.conftest import FinishedRun, write_job


@pytest.mark.parametrize("statement", ["DELETE FROM dialogues", "INSERT INTO runs (run_id) VALUES ('x')",
                                       "DROP TABLE drafts", "CREATE TABLE t (a INT)", "COPY dialogues TO 'x.csv'",
                                       "SELECT 1; UPDATE runs SET status = 'x'", "ATTACH 'other.db'"])
def test_sql_refuses_statements_that_write(finished: FinishedRun, statement: str) -> None:
    with pytest.raises(QueryRefused, match="read-only"):
        run_sql(finished.out, statement)


def test_sql_cli_prints_tables_and_writes_files(finished: FinishedRun, tmp_path, capsys) -> None:
    assert main(["sql", "--out", str(finished.out), "SELECT count(*) AS n FROM dialogues"]) == 0
    assert "(1 rows)" in capsys.readouterr().out
    assert main(["sql", "--out", str(finished.out), "SELECT 1 AS a, 'x' AS b", "--format", "csv"]) == 0
    assert capsys.readouterr().out == "a,b\n1,x\n"  # Unix line ends: `$(seir sql ... | tail -1)` is a clean id
    target = tmp_path / "scores.parquet"
    assert main(["sql", "--out", str(finished.out), "SELECT * FROM turn_final_scores", "--format", "parquet",
                 "--output", str(target)]) == 0
    assert duckdb.sql(f"SELECT count(*) FROM '{target}'").fetchall()[0][0] > 0
    assert main(["sql", "--out", str(finished.out), "DELETE FROM runs"]) == 2
    assert "read-only" in capsys.readouterr().err


def rescore(finished: FinishedRun, out: Path, folder: Path, thresholds: dict[str, float]) -> dict[str, Any]:
    """`seir rescore` on ``out`` with the finished job under other thresholds: a new version, no model call."""
    job = yaml.safe_load(finished.job.read_text())
    job["scoring"]["thresholds"] = thresholds
    folder.mkdir()
    shutil.copy(finished.job.parent / "seeds.jsonl", folder)
    return Runner(load_job(write_job(folder, job)), out, stream=io.StringIO()).rescore()


def test_dataset_latest_is_the_latest_versions_accepted_parquet(finished: FinishedRun, tmp_path: Path) -> None:
    out = Path(shutil.copytree(finished.out, tmp_path / "out"))
    run = FinishedRun(out, {}, "", finished.job)
    dimensions = load_job(finished.job).scoring.thresholds
    # The test makes both outcomes itself: no turn scores a perfect 5 on every dimension, and 0 rejects nothing
    # but a dialogue with a failed stage or a duplicate.
    strict = rescore(finished, out, tmp_path / "strict", dict.fromkeys(dimensions, 5.0))
    lenient = rescore(finished, out, tmp_path / "lenient", dict.fromkeys(dimensions, 0.0))
    for summary in (strict, lenient):
        folder = out / "versions" / f"v{summary['version']:04d}"
        accepted = duckdb.sql(f"SELECT dialogue_id FROM '{folder / 'accepted.parquet'}'").fetchall()
        assert len(accepted) == summary["accepted"]
    assert strict["accepted"] == 0 and strict["rejected"] == 6
    kept = run.sql("""SELECT d.dialogue_id FROM version_dialogues v JOIN dialogues d USING (dialogue_key)
                      WHERE v.version = ? AND d.failure = ''
                        AND d.dialogue_id NOT IN (SELECT x.dropped_id FROM dedup x JOIN versions USING (run_id)
                                                  WHERE version = v.version)""", [lenient["version"]])
    assert accepted and sorted(accepted) == sorted(kept)  # the last version read above is the lenient one
    assert sorted(run.sql("SELECT dialogue_id FROM dataset_latest")) == sorted(accepted)


def test_lineage_lists_every_draft_in_order(finished: FinishedRun) -> None:
    refined = finished.sql("""SELECT dialogue_id FROM dialogues d WHERE EXISTS (
        SELECT 1 FROM drafts x WHERE x.dialogue_key = d.dialogue_key AND x.round > 0) LIMIT 1""")[0][0]
    tree = lineage(finished.out, refined)
    stored = finished.sql("""SELECT turn_index, stage, round FROM drafts WHERE dialogue_key = ? ORDER BY turn_index,
                             CASE stage WHEN 'question' THEN 0 WHEN 'answer' THEN 1 ELSE 2 END, round""",
                          [tree["dialogue_key"]])
    assert [(d["turn_index"], d["stage"], d["round"]) for d in tree["drafts"]] == stored
    assert all(d["calls"] for d in tree["drafts"] if d["ok"])
    text = format_lineage(tree)
    assert f"dialogue {refined}" in text and "round 1" in text and "call llm.chat" in text
    with pytest.raises(QueryRefused, match="no dialogue"):
        lineage(finished.out, "no-such-dialogue")


def test_versions_and_diff_cli(finished: FinishedRun, capsys) -> None:
    assert main(["versions", "--out", str(finished.out)]) == 0
    assert "v0001" in capsys.readouterr().out
    assert main(["diff", "--out", str(finished.out), "1", "v0001"]) == 0
    assert "0 added, 0 removed" in capsys.readouterr().out
    assert main(["diff", "--out", str(finished.out), "1", "99"]) == 2


def test_a_v1_database_is_migrated_forward(tmp_path) -> None:
    with duckdb.connect(str(tmp_path / ProvenanceStore.FILENAME)) as con:
        con.execute(SCHEMA_V1)
        con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        con.execute("INSERT INTO runs (run_id, started_at) VALUES ('old', now())")
        con.execute("""INSERT INTO dialogues (dialogue_key, dialogue_id, run_id, accepted, reason, created_at)
                       VALUES ('k1', 'd1', 'old', false, 'turn 1: image_quality 1.00 < 3.00', now()),
                              ('k2', 'd2', 'old', false, 'turn 1: image stage gave no usable draft', now())""")
        con.execute("""INSERT INTO turns (dialogue_key, turn_index, question, text_content, image_quality, accepted,
                                          run_id)
                       VALUES ('k1', 0, 'q', 4.0, 1.0, false, 'old')""")
    with ProvenanceStore(tmp_path) as store:
        assert store.con.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]
        assert store.con.execute("SELECT dialogue_key, failure FROM dialogues ORDER BY 1").fetchall() == [
            ("k1", ""), ("k2", "turn 1: image stage gave no usable draft")]
        assert store.con.execute("SELECT text_content, image_quality FROM turn_final_scores").fetchall() == [
            (4.0, 1.0)]
        assert store.con.execute("SELECT accepted, reason FROM latest_decisions WHERE dialogue_key = 'k1'"
                                 ).fetchall() == [(False, "turn 1: image_quality 1.00 < 3.00")]


def test_a_newer_database_is_refused_with_both_versions(tmp_path) -> None:
    with ProvenanceStore(tmp_path) as store:
        store.con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=f"schema v99, newer than the v{SCHEMA_VERSION}"):
        ProvenanceStore(tmp_path)
