"""`seir submit` against a real head started with `ray start --head` and token auth on: one small job end to end,
then `seir status` and `seir logs` on it, and the messages a user gets when the token is missing or wrong."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
import requests

from seir.engine.cli.cluster import ClusterError, submission
from tests.engine.conftest import job_dict, write_job

VENV_BIN = Path(sys.executable).parent


@dataclass
class Head:
    dashboard: str
    env: dict[str, str]  # for seir commands: the cluster's token, no RAY_ADDRESS


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def head(tiny_models: dict[str, Path]) -> Iterator[Head]:
    """A head of its own: its own temp dir (so no other test's `ray.init()` finds it) and ports, stopped through its
    own process group rather than `ray stop`, which would stop every Ray on the machine."""
    temp = Path(tempfile.mkdtemp(prefix="seir-ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    gcs, dashboard, agent, client = free_ports(4)
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # SEIR_HOME (the tiny models) and the token reach the driver and every worker through the head's environment;
    # PATH lets the job's `seir run` entrypoint find this venv's seir.
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    command = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}",
               f"--ray-client-server-port={client}", "--num-cpus=2", f"--object-store-memory={256 * 1024**2}",
               f"--temp-dir={temp}", "--disable-usage-stats"]
    log = (temp / "ray-start.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_jobs_api(url, token, process, temp / "ray-start.log")
        yield Head(url, {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"})
    finally:
        # SIGKILL, not SIGTERM: on SIGTERM the head drains for 30 s, and nothing of it outlives the test anyway.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def wait_for_jobs_api(url: str, token: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "ray start exited:\n" + log.read_text()[-3000:]
        try:
            if requests.get(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"}, timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    pytest.fail("the head's job API did not come up in 120 s:\n" + log.read_text()[-3000:])


def seir(*args: str, env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seir.engine.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def test_submit_follow_runs_the_job_to_success(head: Head, tmp_path: Path) -> None:
    project = tmp_path / "project"
    job = write_job(project, job_dict("submitted", topics=["Coral", "Yak"], seir={"turns": 1, "rounds": 0}))
    out = tmp_path / "out"
    submitted = seir("submit", str(job), "--working-dir", str(project), "--address", head.dashboard, "--out",
                     str(out), "--follow", env=head.env, timeout_s=300)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    job_id = submitted.stdout.splitlines()[0]
    assert job_id.startswith("seir-submitted-")
    assert "dataset version" in submitted.stdout, "--follow streams the run's own log"
    assert f"job {job_id} SUCCEEDED" in submitted.stderr

    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(DISTINCT dialogue_key), count(*) FROM dialogues").fetchone() == (2, 2)
        assert con.execute("SELECT count(*) FROM shards WHERE status <> 'committed'").fetchone() == (0,)

    status = seir("status", job_id, "--address", head.dashboard, env=head.env)
    assert status.returncode == 0 and f"{job_id}: SUCCEEDED" in status.stdout
    assert f"output: {out}" in status.stdout
    logs = seir("logs", job_id, "--address", head.dashboard, env=head.env)
    assert logs.returncode == 0 and "[seir] run " in logs.stdout


def test_a_missing_or_wrong_token_says_what_to_set(head: Head, tmp_path: Path) -> None:
    wrong = seir("status", "nope", "--address", head.dashboard, env={**head.env, "RAY_AUTH_TOKEN": "0" * 32})
    assert wrong.returncode == 2
    assert "rejected the token from $RAY_AUTH_TOKEN" in wrong.stderr and "ray get-auth-token" in wrong.stderr
    # No token anywhere: HOME without ~/.ray/auth_token.
    bare = {k: v for k, v in head.env.items() if k != "RAY_AUTH_TOKEN"} | {"HOME": str(tmp_path)}
    missing = seir("status", "nope", "--address", head.dashboard, env=bare)
    assert missing.returncode == 2 and "requires a token and none is set here" in missing.stderr
    unknown = seir("status", "nope", "--address", head.dashboard, env=head.env)
    assert unknown.returncode == 2 and "does not exist" in unknown.stderr


def test_an_unreachable_cluster_is_named() -> None:
    port = free_ports(1)[0]
    result = seir("status", "x", "--address", f"127.0.0.1:{port}", env={**os.environ, "RAY_AUTH_TOKEN": "t"})
    assert result.returncode == 2 and f"cannot reach a Ray dashboard at http://127.0.0.1:{port}" in result.stderr


def test_submission_ships_the_working_dir_and_runs_seir(tmp_path: Path) -> None:
    job = write_job(tmp_path / "jobs", job_dict("shipped"))
    kwargs = submission(job, tmp_path, None, ["data/"], ["datasketch"], {"HF_HOME": "/mnt/seir/hf"})
    assert kwargs["entrypoint"] == "seir run jobs/shipped.yaml --out /mnt/seir/runs/shipped"
    env = kwargs["runtime_env"]
    assert env["working_dir"] == str(tmp_path) and {".venv", ".git", "runs", "/seir/", "data/"} <= set(env["excludes"])
    assert env["pip"] == ["datasketch"] and env["env_vars"] == {"HF_HOME": "/mnt/seir/hf"}
    with pytest.raises(ClusterError, match="absolute path"):
        submission(job, tmp_path, "runs/x", [], [], {})
    with pytest.raises(ClusterError, match="outside the working dir"):
        submission(job, tmp_path / "jobs" / "elsewhere", None, [], [], {})
