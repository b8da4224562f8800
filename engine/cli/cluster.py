"""Run seir on a Ray cluster: ``seir submit``, ``status``, ``logs`` and ``stop`` over Ray's job API.

``seir submit JOB`` runs ``seir run JOB --out DIR`` as a Ray job. Its driver (the one DuckDB writer) runs on the head
node, the model actors wherever the job spec places them. The folder holding the job travels as the job's
``working_dir`` (job specs, seed files, plugin modules); seir itself is installed on every node by cluster.yaml's
setup commands, which keeps the upload small. docs/cluster.md has the whole picture.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from seir.engine.errors import SeirError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
SHARED_ROOT = "/mnt/seir"  # where cluster.yaml mounts the shared filesystem on every node
# Never uploaded: environments, outputs, caches and VCS data (Ray refuses a working_dir over its gRPC limit), and the
# `seir/` stub package of a seir checkout, which would shadow the seir installed on the nodes.
EXCLUDES = (".git", ".venv", "venv", "runs", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "build",
            "dist", "/seir/")


class ClusterError(SeirError):
    """The cluster could not be reached, refused us, or answered with an error; the message says what to do."""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``submit``, ``status``, ``logs`` and ``stop`` to the ``seir`` command line."""
    address = argparse.ArgumentParser(add_help=False)
    address.add_argument("--address", type=_dashboard_url, default=os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS,
                         help=f"the cluster's dashboard (default: $RAY_ADDRESS, else {DEFAULT_ADDRESS})")

    submit = commands.add_parser("submit", parents=[address], help="run a job on a Ray cluster, as a Ray job")
    submit.add_argument("job", type=Path, help="job spec (YAML), inside the working dir")
    submit.add_argument("--out", help=f"output folder on the cluster's shared filesystem, an absolute path "
                                      f"(default: {SHARED_ROOT}/runs/JOB_NAME)")
    submit.add_argument("--follow", action="store_true",
                        help="stream the job's logs and exit with its outcome (0 when it succeeded)")
    submit.add_argument("--working-dir", type=Path, default=Path.cwd(),
                        help="folder uploaded with the job: specs, seed files, plugin modules (default: .)")
    submit.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                        help="more paths to leave out of the upload (gitignore syntax; .gitignore is honoured)")
    submit.add_argument("--pip", action="append", default=[], metavar="REQUIREMENT",
                        help="extra pip requirement for this job, installed by Ray into a per-job virtualenv on "
                             "every node (repeatable)")
    submit.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", type=_env_pair,
                        help="environment variable for the driver and every actor of this job (repeatable)")
    submit.set_defaults(handler=_submit)

    status = commands.add_parser("status", parents=[address], help="a submitted job's status")
    status.add_argument("job_id")
    status.set_defaults(handler=_status)

    logs = commands.add_parser("logs", parents=[address], help="a submitted job's logs")
    logs.add_argument("job_id")
    logs.add_argument("--follow", action="store_true", help="stream until the job ends, exit with its outcome")
    logs.set_defaults(handler=_logs)

    stop = commands.add_parser("stop", parents=[address], help="stop a submitted job")
    stop.add_argument("job_id")
    stop.set_defaults(handler=_stop)


def submission(job: Path, working_dir: Path, out: str | None, excludes: list[str], pip: list[str],
               env: dict[str, str]) -> dict[str, Any]:
    """The keyword arguments of ``JobSubmissionClient.submit_job`` for ``seir run JOB --out OUT``; the spec is
    validated here, so a bad one fails now rather than minutes later on the cluster."""
    from seir.engine.spec import load_job

    working_dir, job = working_dir.resolve(), job.resolve()
    if not job.is_relative_to(working_dir):
        raise ClusterError(f"{job} is outside the working dir {working_dir}, which is what travels to the cluster: "
                           "run from a folder that holds the job, or pass --working-dir")
    spec = load_job(job)
    out = out or f"{SHARED_ROOT}/runs/{spec.name}"
    if not PurePosixPath(out).is_absolute():
        raise ClusterError(f"--out {out}: give an absolute path on storage every node mounts (e.g. "
                           f"{SHARED_ROOT}/runs/{spec.name}); a relative one would land in the job's temporary "
                           "working dir on the head node")
    seed_files = [spec.seeds.topics_file, spec.seeds.templates_file, *spec.seeds.files]
    for path in seed_files:
        if path is not None and not path.is_relative_to(working_dir):
            print(f"[seir] note: {path} is outside {working_dir}, so it is not uploaded: it must exist at that path "
                  "on the head node", file=sys.stderr)
    runtime_env: dict[str, Any] = {"working_dir": str(working_dir), "excludes": [*EXCLUDES, *excludes]}
    if pip:
        runtime_env["pip"] = pip
    if env:
        runtime_env["env_vars"] = env
    return {
        "entrypoint": shlex.join(["seir", "run", job.relative_to(working_dir).as_posix(), "--out", out]),
        "runtime_env": runtime_env,
        "submission_id": f"seir-{spec.name}-{uuid.uuid4().hex[:8]}",
        "metadata": {"seir_job": spec.name, "out": out},
    }


def connect(address: str) -> JobSubmissionClient:
    """A job client for the cluster, carrying its token when one is configured here (Ray sends one only when
    ``RAY_AUTH_MODE=token`` is set; a head started with ``ray start --head`` may demand one regardless)."""
    from ray.job_submission import JobSubmissionClient

    token = _token()
    headers = {"Authorization": f"Bearer {token[0]}"} if token else None
    with explained(address):
        return JobSubmissionClient(address, headers=headers)


@contextmanager
def explained(address: str) -> Iterator[None]:
    """Turn the job API's failures into one line that says what to do."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError:
        token = _token()
        if token is None:
            hint = ("it requires a token and none is set here: set RAY_AUTH_TOKEN to the head's token (`ray "
                    "get-auth-token` on the head prints it), or copy the head's ~/.ray/auth_token to this machine")
        else:
            hint = (f"it rejected the token from {token[1]}: set RAY_AUTH_TOKEN to the head's token (`ray "
                    "get-auth-token` on the head prints it)")
        raise ClusterError(f"the Ray cluster at {address} refused the request: {hint}") from None
    except (ConnectionError, requests.exceptions.ConnectionError):
        raise ClusterError(f"cannot reach a Ray dashboard at {address}: start the cluster (`ray up cluster.yaml`) and "
                           "forward its dashboard (`ray dashboard cluster.yaml`), or pass --address http://HEAD:8265 "
                           "(default: $RAY_ADDRESS)") from None
    except RuntimeError as err:  # the job API answered with an error: an unknown job id, a runtime_env it refused
        raise ClusterError(f"{address}: {err}") from None


def follow(client: JobSubmissionClient, job_id: str) -> int:
    """Stream a job's logs until it ends; 0 when it succeeded, 1 otherwise, 130 when interrupted (the job goes on)."""
    from ray.job_submission import JobStatus

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    try:
        with explained(client.get_address()):
            asyncio.run(tail())
            # The log stream closes when the job ends; its status may take a moment to follow.
            while not (status := client.get_job_status(job_id)).is_terminal():
                time.sleep(0.5)
            message = client.get_job_info(job_id).message
    except KeyboardInterrupt:
        print(f"[seir] stopped following; job {job_id} goes on (`seir stop {job_id}` stops it)", file=sys.stderr)
        return 130
    print(f"[seir] job {job_id} {status.value}" + (f": {message}" if message else ""), file=sys.stderr)
    return 0 if status == JobStatus.SUCCEEDED else 1


def _submit(args: argparse.Namespace) -> int:
    kwargs = submission(args.job, args.working_dir, args.out, args.exclude, args.pip, dict(args.env))
    client = connect(args.address)
    with explained(args.address):
        job_id = client.submit_job(**kwargs)
    print(job_id, flush=True)
    print(f"[seir] submitted `{kwargs['entrypoint']}` as {job_id}; output in {kwargs['metadata']['out']} "
          f"on the cluster; `seir logs {job_id} --follow` streams its logs", file=sys.stderr)
    return follow(client, job_id) if args.follow else 0


def _status(args: argparse.Namespace) -> int:
    client = connect(args.address)
    with explained(args.address):
        info = client.get_job_info(args.job_id)
    print(f"{args.job_id}: {info.status.value}" + (f" ({info.message})" if info.message else ""))
    print(f"entrypoint: {info.entrypoint}")
    if info.metadata and "out" in info.metadata:
        print(f"output: {info.metadata['out']}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    client = connect(args.address)
    if args.follow:
        return follow(client, args.job_id)
    with explained(args.address):
        print(client.get_job_logs(args.job_id), end="")
    return 0


def _stop(args: argparse.Namespace) -> int:
    client = connect(args.address)
    with explained(args.address):
        stopping = client.stop_job(args.job_id)
        status = client.get_job_status(args.job_id)
    print(f"{args.job_id}: " + ("stopping" if stopping else f"already {status.value}"))
    return 0


def _token() -> tuple[str, str] | None:
    """The cluster token and where it came from, looked up the way Ray does: $RAY_AUTH_TOKEN, the file at
    $RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(named) if named else Path.home() / ".ray" / "auth_token"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        if named:  # Ray treats a named but unreadable token file as a misconfiguration, not as "no token"
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={named}: cannot read the token: {err.strerror}") from None
        return None
    return (token, str(path)) if token else None


def _dashboard_url(address: str) -> str:
    return address if "://" in address else f"http://{address}"


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value
