"""Progress between shard commits: a heartbeat says what the run is working on."""

from __future__ import annotations

import asyncio
import io

from seir.engine.progress import Progress
from seir.engine.records import Stage


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
