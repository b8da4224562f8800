"""A whole job whose llm, judge and image roles are served over HTTP by an OpenAI-compatible server (the tiny models
behind the test server): dialogues and model calls land in provenance, and a second run asks the server nothing."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seir.engine.errors import SeirError
from tests.engine.conftest import FinishedRun, job_dict, run_job, write_job
from tests.support.openai_server import OpenAIServer

SERVED = {"llm": ("tiny:llm", "transformers-chat", "openai-chat"),
          "judge": ("tiny:judge", "transformers-vision-chat", "openai-chat"),
          "image": ("tiny:sd", "diffusers-text-to-image", "openai-image")}


@pytest.fixture(scope="module")
def server(tiny_models: dict[str, Path]) -> Iterator[OpenAIServer]:
    with OpenAIServer({model: local for model, local, _ in SERVED.values()}) as running:
        yield running


def remote_roles(url: str) -> dict[str, Any]:
    """The three roles of the default test job, served by ``url``."""
    roles = job_dict()["roles"]
    return {role: {**roles[role], "backend": remote, "model": model, "num_cpus": 0.1,
                   "options": {"base_url": url, "max_concurrency": 4, "timeout_s": 60}}
            for role, (model, _, remote) in SERVED.items()}


@pytest.fixture(scope="module")
def finished(ray_local: None, server: OpenAIServer, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    folder = tmp_path_factory.mktemp("openai-run")
    # Only the served roles: the judge alone scores and dedup is off, so the engine loads no model itself.
    job = job_dict("endpoint", topics=["Snow Leopard", "Coral"], seir={"turns": 1}, dedup={"methods": []})
    job["roles"] = remote_roles(server.url)
    del job["scoring"]
    return run_job(write_job(folder, job), folder / "out")


def test_dialogues_and_calls_reach_provenance(finished: FinishedRun, server: OpenAIServer) -> None:
    assert finished.sql("SELECT count(*) FROM dialogues") == [(2,)]
    calls = dict(finished.sql("""SELECT role || ' ' || method || ' ' || model_id, count(*) FROM model_calls
                                 WHERE NOT cached GROUP BY ALL"""))
    assert calls.keys() >= {"llm chat tiny:llm", "judge chat tiny:judge", "judge score tiny:judge",
                            "image render tiny:sd"}
    served = [r for r in server.requests if r["path"] in ("/v1/chat/completions", "/v1/images/generations")]
    # Besides the calls, the probes at pool start: the llm's one chat; the judge's chat, image, and the continued
    # message open, closed and with logprobs (it then scores by continue-logprobs); nothing for the image role.
    assert sum(n for key, n in calls.items() if key.split()[0] in SERVED) + 1 + 5 == len(served)
    assert finished.sql("SELECT DISTINCT method FROM scores WHERE scorer = 'judge'") == [("continue-logprobs",)]
    revisions = finished.sql("SELECT DISTINCT revision FROM model_calls WHERE role IN ('llm', 'judge', 'image')")
    assert revisions == [("server",)]


def test_a_lasting_error_on_a_whole_batch_stops_the_run(ray_local: None, tiny_models: dict[str, Path],
                                                        tmp_path: Path) -> None:
    """The image server refuses every render (after the probe found the roles fine): the run stops at the first
    batch with the server's message, instead of rejecting every dialogue quietly, and the same command resumes.
    Its own server: the module's counts what the module's run asked."""
    job = job_dict("refused", topics=["Snow Leopard", "Coral"], seir={"turns": 1}, dedup={"methods": []})
    del job["scoring"]
    with OpenAIServer({model: local for model, local, _ in SERVED.values()}) as server:
        job["roles"] = remote_roles(server.url)
        server.fault_path, server.always = "/v1/images/generations", "400"
        with pytest.raises(SeirError) as err:
            run_job(write_job(tmp_path, job), tmp_path / "out")
        server.reset()
        resumed = run_job(write_job(tmp_path, job), tmp_path / "out")
    message = str(err.value)
    assert message.startswith("stopped: every request of a batch of 2 failed the same way, so every dialogue would "
                              f"be rejected. image render failed: EndpointError: POST {server.url}/images/generations "
                              "-> HTTP 400: ")
    assert message.endswith("Fix the image role (or its server) and run the same command again: committed shards "
                            "are kept.")
    assert resumed.summary["accepted"] + resumed.summary["rejected"] == 2 and resumed.summary["top_errors"] == []


def test_a_second_run_makes_no_new_requests(finished: FinishedRun, server: OpenAIServer, tmp_path: Path) -> None:
    finished = dataclasses.replace(finished, out=Path(shutil.copytree(finished.out, tmp_path / "out")))  # its own
    before = len(server.requests)
    calls = finished.sql("SELECT count(*) FROM model_calls WHERE NOT cached")
    run_job(finished.job, finished.out)
    assert len(server.requests) == before
    assert finished.sql("SELECT count(*) FROM model_calls WHERE NOT cached") == calls


def small_window_job(server: OpenAIServer, context_length: int | None = None) -> dict[str, Any]:
    """Only the writer is served (the judge and the image model run here), over four turns."""
    job = job_dict("window", topics=["Snow Leopard"], seir={"turns": 4, "rounds": 0, "gate_default": 0.0},
                   dedup={"methods": []})
    job["roles"]["llm"] = remote_roles(server.url)["llm"]
    if context_length is not None:
        job["roles"]["llm"]["context_length"] = context_length
    return job


def test_a_servers_small_window_is_read_and_every_request_is_fitted_to_it(
        ray_local: None, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """The server reports a window (max_model_len) and refuses what exceeds it, counted by its own tokenizer. seir
    reads the window at the probe, fits every request by its safe-side estimate, and so the server refuses none;
    the later turns' requests leave history out, saying so."""
    window = 330  # the estimate of a question request's fixed parts is ~190, and each turn adds ~40 of history
    with OpenAIServer({"tiny:llm": "transformers-chat"}) as server:
        server.context_length = window
        run = run_job(write_job(tmp_path, small_window_job(server)), tmp_path / "out")
        asked = [r for r in server.requests if r["path"] == "/v1/chat/completions"]
    assert f"context windows: llm {window:,} tokens (server)" in run.log
    assert run.sql("SELECT count(*) FROM model_calls WHERE role = 'llm' AND error IS NOT NULL") == [(0,)]
    assert run.sql("SELECT max(tokens_in) + 12 <= ? FROM model_calls WHERE role = 'llm'", [window]) == [(True,)]
    assert len(asked) == 1 + run.sql("SELECT count(*) FROM model_calls WHERE role = 'llm' AND NOT cached")[0][0]
    marked = run.sql("""SELECT count(*) FROM model_calls JOIN call_outputs USING (call_key)
                        WHERE role = 'llm' AND CAST(request AS VARCHAR) LIKE '%omitted]%'""")
    assert marked[0][0] > 0


def test_a_server_refusing_a_request_as_too_long_fails_those_drafts_without_retrying(
        ray_local: None, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """The job claims a larger window than the server has: the server refuses the requests over its own (HTTP 400,
    in vLLM's words). That refusal is read as a context overflow: sent once, never retried, the drafts fail naming
    it and what to set, and the run is not stopped."""
    with OpenAIServer({"tiny:llm": "transformers-chat"}) as server:
        server.context_length = 60  # the probe's one-token request fits; no question request does
        run = run_job(write_job(tmp_path, small_window_job(server, context_length=4096)), tmp_path / "out")
        bodies = [json.dumps(r["body"], sort_keys=True) for r in server.requests
                  if r["path"] == "/v1/chat/completions"]
    assert len(bodies) == len(set(bodies))  # nothing asked twice
    [(failure,)] = run.sql("SELECT failure FROM dialogues")
    assert "longer than its context window" in failure and "set the role's context_length" in failure
    assert run.summary["accepted"] == 0 and run.summary["rejected"] == 1
