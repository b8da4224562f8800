"""The dedup pass inside a run and as `seir dedup`: duplicates across shards are dropped, recorded, queryable."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from seir.engine.cli import main
from seir.engine.query import lineage
from tests.engine.conftest import TOPICS, job_dict, run_job, write_job


def test_dialogues_with_the_same_text_are_deduplicated_across_shards(ray_local: None, tmp_path: Path) -> None:
    job = job_dict("dupes", topics=TOPICS[:3], seir={"turns": 1, "rounds": 0},
                   execution={"shard_size": 1, "shards_in_flight": 2})
    job["roles"]["llm"] = {"backend": "tests.engine.fault_backends:SameReply", "model": "none", "num_cpus": 0.1}
    job["scoring"]["thresholds"] = dict.fromkeys(job["scoring"]["thresholds"], 0.0)
    run = run_job(write_job(tmp_path, job), tmp_path / "out")
    assert run.summary["accepted"] == 1 and run.summary["rejected"] == 2
    drops = run.sql("SELECT dropped_id, kept_id, matched_id, method, similarity FROM dedup")
    assert len(drops) == 2 and {m for *_, m, _ in drops} == {"exact-text"} and all(s == 1.0 for *_, s in drops)
    kept = {k for _, k, *_ in drops}
    assert len(kept) == 1
    # The kept one has the highest combined score (ties: made first, then smallest id).
    best = run.sql("""SELECT d.dialogue_id FROM dialogues d JOIN turn_final_scores f USING (dialogue_key)
                      ORDER BY (f.text_content + f.image_content + f.image_quality + f.image_text_synergy) DESC,
                               d.created_at, d.dialogue_id LIMIT 1""")[0][0]
    assert kept == {best}
    rejected = pq.read_table(tmp_path / "out" / "versions" / "v0001" / "rejected.parquet").to_pylist()
    assert all(r["reason"].startswith(f"duplicate of {best} (exact-text") for r in rejected)
    dropped = drops[0][0]
    assert lineage(tmp_path / "out", dropped)["dedup"][0]["kept_id"] == best

    assert main(["dedup", str(run.job), "--out", str(tmp_path / "out")]) == 0
    again = run.sql("SELECT dropped_id, kept_id, method FROM dedup WHERE run_id = "
                    "(SELECT run_id FROM runs WHERE kind = 'dedup') ORDER BY 1")
    assert again == sorted((d, k, m) for d, k, _, m, _ in drops)
    assert run.sql("SELECT max(version), count(*) FROM versions") == [(2, 2)]
