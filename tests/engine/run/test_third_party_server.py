"""A whole job whose llm and judge are served by a real third-party OpenAI-compatible server from PyPI (Hugging
Face's ``transformers serve``, serving the tiny model folders): the probe finds that its judge can only score by
sampling, the job runs and accepts its dialogues, and a pinned method the server lacks stops the run before any
shard, with a message naming the role, the server, what failed and what to change."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from seir.engine.errors import SeirError
from seir.engine.run import Runner
from seir.engine.spec import load_job
from seir.operators.backends.openai_chat import OpenAIChat
from tests.engine.conftest import FinishedRun, job_dict, run_job, write_job
from tests.support.transformers_serve import transformers_serve

DIMENSIONS = ("question", "text_content", "image_content", "image_quality", "image_text_synergy")


@pytest.fixture(scope="module")
def served(tiny_models: dict[str, Path]) -> Iterator[str]:
    with transformers_serve() as url:
        yield url


def served_job(url: str, tiny_models: dict[str, Path], judge_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Two seeds, one turn, llm and judge through ``url`` (the model is the folder the server loads), the image
    role local; every threshold 0, so every dialogue the judge could score is accepted whatever the noise."""
    job = job_dict("third-party", topics=["Snow Leopard", "Coral"], seir={"turns": 1}, dedup={"methods": []},
                   scoring={"weights": {d: {"judge": 1.0} for d in DIMENSIONS},
                            "thresholds": dict.fromkeys(DIMENSIONS, 0.0)})
    options = {"base_url": url, "max_concurrency": 4, "timeout_s": 60, "score_samples": 3}
    for role in ("llm", "judge"):
        job["roles"][role].update(backend="openai-chat", model=str(tiny_models[role]), num_cpus=0.1,
                                  options={**options, **(judge_options or {} if role == "judge" else {})})
    for unused in ("embed", "clip"):
        del job["roles"][unused]
    return job


@pytest.fixture(scope="module")
def finished(ray_local: None, served: str, tiny_models: dict[str, Path],
             tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    folder = tmp_path_factory.mktemp("third-party")
    return run_job(write_job(folder, served_job(served, tiny_models)), folder / "out")


def test_a_job_through_transformers_serve_accepts_its_dialogues(finished: FinishedRun) -> None:
    assert (finished.summary["accepted"], finished.summary["rejected"]) == (2, 0)
    assert finished.sql("SELECT count(*) FROM model_calls WHERE error IS NOT NULL") == [(0,)]
    assert finished.summary["top_errors"] == []


def test_the_probe_picks_sampling_and_every_judge_score_says_so(finished: FinishedRun, served: str) -> None:
    probes = dict(finished.sql("SELECT role, probe FROM models WHERE probe IS NOT NULL"))
    judge = json.loads(probes["judge"])
    assert judge["score_method"] == "sampled" and judge["problems"] == []
    assert judge["checks"]["images"] == "ok" and judge["checks"]["n"].startswith("ignored")
    assert "HTTP 422" in judge["checks"]["continue-logprobs"]  # refused: "Unexpected fields in the request"
    assert "no top logprobs" in judge["checks"]["answer-logprobs"]
    assert json.loads(probes["llm"])["checks"] == {"chat": "ok"}  # the llm only chats: nothing else asked
    assert f"judge: {served} model " in finished.log and "| scores by sampled" in finished.log
    assert finished.sql("SELECT DISTINCT method FROM scores WHERE scorer = 'judge'") == [("sampled",)]
    config = json.loads(finished.sql("SELECT config FROM models WHERE role = 'judge'")[0][0])
    assert config["score_method"] == "sampled"


def test_pinning_a_method_the_server_lacks_stops_before_any_shard(ray_local: None, served: str,
                                                                  tiny_models: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    job = write_job(tmp_path, served_job(served, tiny_models, {"score_method": "continue-logprobs"}))
    stream = io.StringIO()
    with pytest.raises(SeirError) as err:
        Runner(load_job(job), tmp_path / "out", stream=stream).run()
    message = str(err.value)
    assert message.startswith("the model servers cannot do what this job needs, so nothing was run:\n  role judge "
                              f"(openai-chat at {served}): score_method 'continue-logprobs' does not work on this "
                              f"server (POST {served}/chat/completions -> HTTP 422")
    assert "continue_final_message" in message and message.endswith("use score_method: auto (it would use sampled)")
    with duckdb.connect(str(tmp_path / "out" / "provenance.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM dialogues").fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM model_calls").fetchall() == [(0,)]


def test_a_text_only_model_as_judge_is_refused_for_images(served: str, tiny_models: dict[str, Path]) -> None:
    """The judge role looks at images: a server holding a text-only model there is a problem found at start.
    transformers serve answers such a request without a word, dropping the image: the prompt's length tells."""
    report = OpenAIChat(str(tiny_models["llm"]), base_url=served, max_retries=0).probe(
        frozenset({"chat", "score", "vision"}))
    assert report.checks["chat"] == "ok" and report.checks["images"].endswith("it dropped the image")
    assert [p for p in report.problems if p.startswith("the server rejects images (")], report.problems
