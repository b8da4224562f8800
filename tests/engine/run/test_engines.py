"""A job whose llm is ``backend: vllm``: seir starts a real engine (vLLM's CPU build, `make vllm-env`) in the role's
actor, feeds it, restarts it when it dies mid-run, and leaves no engine process behind when the driver is killed."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest

from seir.engine.errors import SeirError
from tests.conftest import vllm_python
from tests.engine.conftest import TOPICS, FinishedRun, job_dict, run_job, write_job
from tests.engine.run.test_resume import kill_group, seir_run, wait_for

DIMENSIONS = ("question", "text_content", "image_content", "image_quality", "image_text_synergy")
SERVER_STARTED = re.compile(r"Started server process \[(\d+)\]")


def engine_job(name: str, mark: str, **llm_options: Any) -> dict[str, Any]:
    """Eight seeds, two turns; the llm through a vLLM engine, the rest local. Every threshold 0, so each dialogue
    that was written and scored is accepted whatever the random weights say. ``mark`` goes into the engine's
    environment, so a test finds every process of this job's engine and no other."""
    job = job_dict(name, topics=TOPICS, dedup={"methods": []},
                   scoring={"weights": {d: {"judge": 1.0} for d in DIMENSIONS},
                            "thresholds": dict.fromkeys(DIMENSIONS, 0.0)},
                   execution={"shard_size": 2, "shards_in_flight": 2})
    job["roles"]["llm"].update(backend="vllm", model="tiny:llm-wide-heads", num_cpus=0.2, options={
        "python": vllm_python(), "max_model_len": 2048, "startup_timeout_s": 300,
        "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "SEIR_TEST_ENGINE": mark},
        **llm_options})
    for unused in ("embed", "clip"):
        del job["roles"][unused]
    return job


def engine_processes(mark: str) -> list[int]:
    """Every live process whose environment carries ``mark``: the engine's server and whatever it started."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if f"SEIR_TEST_ENGINE={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def new_engine_log(since: float, timeout_s: float) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = [p for p in Path(tempfile.gettempdir()).glob("seir-vllm-*.log") if p.stat().st_mtime >= since]
        if logs:
            return max(logs, key=lambda p: p.stat().st_mtime)
        time.sleep(0.2)
    raise AssertionError("no engine log appeared")


class EngineKiller(threading.Thread):
    """Kills the engine's server (kill -9) once it has answered its first chat requests of the run."""

    def __init__(self, since: float) -> None:
        super().__init__(daemon=True)
        self.since = since
        self.killed: int | None = None
        self.log: Path | None = None

    def run(self) -> None:
        self.log = new_engine_log(self.since, timeout_s=600)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            started = SERVER_STARTED.search(text)
            if started and text.count("POST /v1/chat/completions") >= 8:  # the probe's, then the run's
                self.killed = int(started.group(1))
                os.kill(self.killed, signal.SIGKILL)
                return
            time.sleep(0.1)


def gone(mark: str, timeout_s: float) -> list[int]:
    """The engine processes still running after up to ``timeout_s``: none, unless one outlived its actor."""
    deadline = time.monotonic() + timeout_s
    while engine_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.5)
    return engine_processes(mark)


@pytest.fixture(scope="module")
def killed_mid_run(ray_local: None,
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[FinishedRun, EngineKiller, list[int]]:
    """The run, the killer, and the engine processes left once the run ended (its pools stopped)."""
    folder, mark = tmp_path_factory.mktemp("vllm-job"), uuid.uuid4().hex
    killer = EngineKiller(time.time())
    killer.start()
    finished = run_job(write_job(folder, engine_job("vllm", mark)), folder / "out")
    killer.join(timeout=5)
    return finished, killer, gone(mark, timeout_s=30)


def test_a_job_through_a_vllm_engine_survives_the_engine_dying(
        killed_mid_run: tuple[FinishedRun, EngineKiller, list[int]]) -> None:
    finished, killer, _ = killed_mid_run
    assert killer.killed is not None and killer.log is not None
    assert len(SERVER_STARTED.findall(killer.log.read_text(errors="replace"))) == 2  # the engine came back once
    assert (finished.summary["accepted"], finished.summary["rejected"]) == (len(TOPICS), 0)
    assert finished.sql("SELECT count(*) FROM model_calls WHERE error IS NOT NULL") == [(0,)]
    # Every shard committed once, and each dialogue once in it.
    assert finished.sql("SELECT count(*), count(DISTINCT dialogue_key) FROM dialogues") == [(len(TOPICS),) * 2]
    assert finished.sql("SELECT count(*) FROM shards WHERE status = 'committed'") == [(len(TOPICS) // 2,)]
    assert finished.sql("SELECT count(*) FROM turns") == [(2 * len(TOPICS),)]


def test_the_engine_is_probed_and_keyed_like_any_server(
        killed_mid_run: tuple[FinishedRun, EngineKiller, list[int]]) -> None:
    finished, _, left = killed_mid_run
    assert left == []  # the pool stopped its engine, and every process the engine had started
    assert re.search(r"llm: http://127\.0\.0\.1:\d+/v1 model tiny:llm-wide-heads: listed, context 2048 \| chat ok",
                     finished.log)
    (config,) = finished.sql("SELECT json_extract_string(config, '$.engine_version'), "
                             "json_extract_string(config, '$.base_url') FROM models WHERE role = 'llm'")
    assert config == ("0.32.0", None)


def test_killing_the_driver_leaves_no_engine_process(ray_local: None, tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    job = write_job(tmp_path, engine_job("orphans", mark))
    driver = seir_run(job, tmp_path / "out")
    try:
        wait_for(driver, "llm: http://127.0.0.1", timeout_s=600)  # the engine answers the probe
        assert engine_processes(mark), "the engine should be running by now"
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone; Ray's own processes go as they go
        assert gone(mark, timeout_s=120) == []
    finally:
        kill_group(driver)
        for pid in engine_processes(mark):  # so a failure here leaves nothing running for the next test
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("broken", ["python", "model"])
def test_an_engine_that_cannot_start_stops_the_run_at_pool_start(ray_local: None, tmp_path: Path,
                                                                broken: str) -> None:
    """A bad environment is found before the server starts; a model the engine cannot load (a diffusers folder) when
    the server exits. Either way the run stops before any shard, naming the role and saying what failed."""
    mark = uuid.uuid4().hex
    job = (engine_job("bad-python", mark, python=str(tmp_path / "no-venv" / "bin" / "python")) if broken == "python"
           else engine_job("bad-model", mark))
    if broken == "model":
        job["roles"]["llm"]["model"] = "tiny:sd"
    with pytest.raises(SeirError) as err:
        run_job(write_job(tmp_path, job), tmp_path / "out")
    message = str(err.value)
    assert f"role llm (vllm, model {job['roles']['llm']['model']}) could not start, so nothing was run" in message
    if broken == "python":
        assert "options.python" in message and "is not an executable file" in message
    else:
        assert "the vllm engine did not come up: it exited with code" in message
        assert "Last lines of its log" in message and "Invalid repository ID or local directory" in message
    with duckdb.connect(str(tmp_path / "out" / "provenance.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM dialogues").fetchone() == (0,)
    assert gone(mark, timeout_s=30) == []
