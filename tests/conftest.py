"""Shared fixtures. Tests run offline: real tiny models built here, never a download from a model hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The seed projects' data (InterSyn's lists, InterMT's human scores) beside the repo, as CI has it.
SHARED_DATA = Path(os.environ.get("SEIR_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def shared_file(*parts: str) -> Path:
    """A file of the shared data; the test is skipped, saying where it looked, when that data is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not found: put the shared data beside the repo or set SEIR_SHARED_DATA")
    return path


# vLLM's CPU build in an environment of its own (`make vllm-env`), for the tests that run a real engine.
VLLM_PYTHON = Path(os.environ.get("SEIR_VLLM_PYTHON") or Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin"
                   / "python")


ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB of KV cache: vLLM's CPU default (4) is more than tests need


def vllm_python() -> str:
    """The engine environment's interpreter; the test is skipped, saying how to make it, when there is none."""
    if not VLLM_PYTHON.is_file():
        pytest.skip(f"{VLLM_PYTHON} not found: run `make vllm-env` (or set SEIR_VLLM_PYTHON) for the engine tests")
    return str(VLLM_PYTHON)


# Before any test imports transformers or huggingface_hub, which read these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def seir_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh SEIR_HOME per session, so `tiny:NAME` models resolve to this session's builds, in this process and
    in every Ray worker started after it."""
    home = tmp_path_factory.mktemp("seir-home")
    os.environ["SEIR_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_models(seir_home: Path) -> dict[str, Path]:
    """Every tiny model (llm, judge, sd, clip, llm-wide-heads), built once per test session: name -> folder."""
    import torch

    from seir.operators.backends.tiny import build_tiny_models

    torch.set_num_threads(min(2, torch.get_num_threads()))  # keep the suite polite on small CI machines
    return build_tiny_models(seir_home / "models")
