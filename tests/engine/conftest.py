"""Fixtures for engine tests: one local Ray for the session, and small real jobs on the tiny models."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from seir.engine.run import Runner
from seir.engine.spec import load_job

TOPICS = ["Snow Leopard", "Red-crowned Crane", "The Forbidden City", "Coral", "Honey Durian", "Thermometer",
          "The aurora and the meteor", "Yaks treading on snow"]
TEMPLATES = ["Do you know ***? Can you draw a picture of it for me?",
             "What does *** look like? Can you draw a sketch of it for me?",
             "Have you heard of ***? Help me draw its magnificent scene."]


def job_dict(name: str = "t", topics: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """A small job on the tiny models; ``overrides`` replace top-level sections (merged one level deep)."""
    job: dict[str, Any] = {
        "name": name,
        "seeds": {"topics": TOPICS[:4] if topics is None else topics, "templates": TEMPLATES},
        "roles": {
            "llm": {"backend": "transformers-chat", "model": "tiny:llm", "num_cpus": 0.4, "batch_size": 8,
                    "sampling": {"max_new_tokens": 12, "temperature": 0.8, "top_p": 0.95}},
            "judge": {"backend": "transformers-vision-chat", "model": "tiny:judge", "num_cpus": 0.4,
                      "batch_size": 16, "sampling": {"max_new_tokens": 8}},
            "image": {"backend": "diffusers-image-to-image", "model": "tiny:sd", "num_cpus": 0.3, "batch_size": 8},
            "embed": {"backend": "sentence-transformers", "model": "bundled:all-MiniLM-L6-v2", "num_cpus": 0.2},
            "clip": {"backend": "clip", "model": "tiny:clip", "num_cpus": 0.2},
        },
        "seir": {"turns": 2, "rounds": 1, "image_width": 32, "image_height": 32, "image_steps": 1,
                 "gate_default": 3.0},
        "scoring": {
            "weights": {"question": {"judge": 1.0}, "text_content": {"judge": 0.5, "text": 0.5},
                        "image_content": {"judge": 0.5, "clip": 0.5},
                        "image_quality": {"judge": 0.5, "image-quality": 0.5},
                        "image_text_synergy": {"judge": 0.5, "clip": 0.5}},
            "thresholds": {"question": 1.5, "text_content": 1.5, "image_content": 1.0, "image_quality": 1.5,
                           "image_text_synergy": 0.5},
        },
        "execution": {"shard_size": 2, "shards_in_flight": 2},
    }
    for section, value in overrides.items():
        job[section] = {**job[section], **value} if isinstance(value, dict) and section in job else value
    return job


def write_job(folder: Path, job: dict[str, Any], seed_lines: list[Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if seed_lines is not None:
        lines = [line if isinstance(line, bytes) else json.dumps(line).encode() for line in seed_lines]
        (folder / "seeds.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        job = {**job, "seeds": {**job["seeds"], "files": ["seeds.jsonl"]}}
    path = folder / f"{job['name']}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def one_turn_job(tmp_path_factory: pytest.TempPathFactory, name: str, shard_size: int) -> Path:
    """Four one-turn dialogues, one round, in shards of ``shard_size`` run one at a time: a run long enough to stop
    in the middle of (the kill -9 and full-disk tests), short enough to run again."""
    spec = job_dict(name, topics=TOPICS[:4], seir={"turns": 1, "rounds": 1},
                    execution={"shard_size": shard_size, "shards_in_flight": 1})
    return write_job(tmp_path_factory.mktemp(f"{name}-job"), spec)


def start_local_ray() -> None:
    """The local Ray the engine tests share (tests that need their own cluster restart it with this)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)


@pytest.fixture(scope="session")
def ray_local(tiny_models: dict[str, Path]) -> Iterator[None]:
    """A local Ray for the engine tests (started after SEIR_HOME is set, so workers see the tiny models)."""
    import ray

    start_local_ray()
    yield
    ray.shutdown()


GOOD_SEEDS = [
    {"id": "yak-day", "text": "How does a yak spend a winter day on the plateau? Please draw one for me.", "turns": 1},
    {"id": "kite", "topic": "Kite festival", "template": "Have you seen ***? Draw it for me."},
]
BAD_SEEDS = [
    b'{"id": "cut", "text": "unterminated',
    {"id": "typed", "text": 7},
    {"id": "blank", "text": "  "},
    b'{"id": "latin", "text": "caf\xe9"}',
    {"id": "gone", "text": "Draw this.", "images": ["missing.png"]},
]


@dataclass
class FinishedRun:
    out: Path
    summary: dict[str, Any]
    log: str
    job: Path

    def sql(self, query: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.out / "provenance.duckdb"), read_only=True) as con:
            return con.execute(query, params or []).fetchall()


def run_job(job: Path, out: Path, cache: Path | None = None) -> FinishedRun:
    stream = io.StringIO()
    summary = Runner(load_job(job), out, stream=stream, cache_dir=cache).run()
    return FinishedRun(out, summary, stream.getvalue(), job)


@pytest.fixture(scope="session")
def finished(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    folder = tmp_path_factory.mktemp("e2e")
    # No draft reaches a gate of 5, so every stage is refined whatever the random weights score: the tests that
    # read refinement rounds always find them.
    job = write_job(folder, job_dict("e2e", seir={"gate_default": 5.0}), seed_lines=GOOD_SEEDS + BAD_SEEDS)
    return run_job(job, folder / "out")
