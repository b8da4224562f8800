"""Progress between shard commits: a heartbeat says what the run is working on; the summary at the end."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from seir.engine.progress import Progress, format_summary, run_summary
from seir.engine.records import Stage
from seir.engine.store import ProvenanceStore


def test_heartbeat_reports_the_current_step_when_no_shard_commits() -> None:
    stream = io.StringIO()
    progress = Progress(total_dialogues=8, total_shards=2, stream=stream)
    progress.note_round(1, Stage.IMAGE, 2, 3)

    async def a_while() -> None:
        beat = asyncio.create_task(progress.heartbeat(every_s=0.05))
        await asyncio.sleep(0.18)
        beat.cancel()

    asyncio.run(a_while())
    lines = stream.getvalue().splitlines()
    assert lines and all(line.startswith("[seir] shards 0/2 | dialogues 0/8") for line in lines)
    assert lines[-1].endswith("working on turn 2 image round 2 (3 dialogues)")


def test_the_summary_lists_each_roles_most_frequent_errors(tmp_path: Path) -> None:
    with ProvenanceStore(tmp_path) as store:
        errors = [("judge", "judge score failed: HTTP 422")] * 3 + [("judge", "judge chat timed out")] * 2 + [
            ("judge", "a"), ("judge", "b"), ("llm", "llm chat failed: HTTP 401"), ("llm", None)]
        for i, (role, error) in enumerate(errors):
            store.con.execute("INSERT INTO model_calls (call_key, run_id, role, method, cached, error) "
                              "VALUES (?, 'r', ?, 'chat', false, ?)", [f"k{i}", role, error])
        summary = run_summary(store.con, "r")
    assert summary["top_errors"] == [
        {"role": "judge", "error": "judge score failed: HTTP 422", "count": 3},
        {"role": "judge", "error": "judge chat timed out", "count": 2},
        {"role": "judge", "error": "a", "count": 1},  # three per role, ties by message
        {"role": "llm", "error": "llm chat failed: HTTP 401", "count": 1}]
    assert "  error  judge  x3: judge score failed: HTTP 422" in format_summary(summary).splitlines()
