"""A run cannot succeed on nothing: a role whose every call fails (here a judge whose batches its processor refuses,
as Gemma 3's did for one flat list of pictures) stops the run after the shard that shows it, with the reason and a
non-zero exit, and the same command resumes once the role is fixed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from seir.engine.errors import SeirError
from seir.operators.backends.base import ChatRequest, ChatResult
from seir.operators.backends.transformers_vision import TransformersVisionChat
from tests.engine.conftest import job_dict, run_job, write_job

pytestmark = pytest.mark.slow


class RefusingJudge(TransformersVisionChat):
    """The tiny judge, with a processor that refuses every batch it is given."""

    name = "test-refusing-judge"

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        raise ValueError("the processor wants one list of pictures per prompt")


def test_a_role_that_fails_every_call_stops_the_run(ray_local: None, tmp_path: Path) -> None:
    job: dict[str, Any] = job_dict("refusing", topics=["Snow Leopard", "Coral", "Thermometer", "Yaks treading on snow"],
                                   seir={"turns": 1, "rounds": 0}, execution={"shard_size": 2, "shards_in_flight": 1})
    job["roles"]["judge"]["backend"] = f"{__name__}:RefusingJudge"
    with pytest.raises(SeirError) as err:
        run_job(write_job(tmp_path / "a", job), tmp_path / "out")
    message = str(err.value)
    assert message.startswith("stopped: every one of the ") and " judge calls so far failed" in message
    assert "the processor wants one list of pictures per prompt" in message and "committed shards are kept" in message
    job["roles"]["judge"]["backend"] = "transformers-vision-chat"
    resumed = run_job(write_job(tmp_path / "b", job), tmp_path / "out")
    assert resumed.summary["accepted"] + resumed.summary["rejected"] == 4
