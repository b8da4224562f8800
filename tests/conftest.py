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
    """Every tiny model (llm, judge, sd, clip), built once per test session: name -> folder."""
    import torch

    from seir.operators.backends.tiny import build_tiny_models

    torch.set_num_threads(min(2, torch.get_num_threads()))  # keep the suite polite on small CI machines
    return build_tiny_models(seir_home / "models")
