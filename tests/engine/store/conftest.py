"""A small finished output the store's fault tests copy and damage, and the CLI run as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.conftest import FinishedRun, one_turn_job, run_job


def seir(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "seir.engine.cli", *args], capture_output=True, text=True,
                          env=environ, cwd=cwd, timeout=600)


@pytest.fixture(scope="session")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return one_turn_job(tmp_path_factory, "faults", shard_size=1)


@pytest.fixture(scope="session")
def uninterrupted(ray_local: None, job: Path, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    return run_job(job, tmp_path_factory.mktemp("uninterrupted") / "out")


@pytest.fixture
def output(uninterrupted: FinishedRun, tmp_path: Path) -> Path:
    """A copy of a finished output, to damage."""
    out = tmp_path / "out"
    shutil.copytree(uninterrupted.out, out)
    return out


