"""seir on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and an image node, each its own raylet):
cluster.yaml passes Ray's own launcher validation, image actors land only where the job spec says, an actor that
crashes is restarted and its call retried, and a node killed mid-run costs nothing committed and duplicates nothing."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

from seir.engine.run import Runner
from seir.engine.seeds import load_seeds
from seir.engine.spec import load_job
from seir.operators.backends.base import RenderRequest, RenderResult
from seir.operators.backends.diffusers_image import DiffusersTextToImage
from tests.engine.conftest import TOPICS, job_dict, start_local_ray, write_job

REPO = Path(__file__).resolve().parents[3]
IMAGE_NODE = {"num_cpus": 1, "num_gpus": 1, "resources": {"image_node": 1}}  # a GPU Ray counts; torch finds none


class RecordingImage(DiffusersTextToImage):
    """The real tiny text-to-image backend, which also notes the node and GPUs of every process it starts in and can
    fail once: 'exit' kills its own process on its first render (an actor crash); 'hang' blocks the first render that
    comes after the file ``armed`` appears, until the test kills the node under it."""

    name: ClassVar[str] = "test-recording-image"

    def __init__(self, model: str, revision: str | None = None, *, record: str, fault: str = "",
                 **options: Any) -> None:
        super().__init__(model, revision, **options)
        self.record, self.fault = Path(record), fault
        placed = {"node": ray.get_runtime_context().get_node_id(), "gpus": ray.get_gpu_ids()}
        (self.record / f"start-{os.getpid()}").write_text(json.dumps(placed))

    def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        if self.fault == "exit" and first_time(self.record / "fired"):
            os._exit(1)
        if self.fault == "hang" and (self.record / "armed").exists() and first_time(self.record / "fired"):
            time.sleep(600)
        return super().render(requests)


def first_time(marker: Path) -> bool:
    """True for exactly one caller across all processes: whoever creates the marker file."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


class Log(io.StringIO):
    """A run's log that signals when a shard has been committed."""

    def __init__(self) -> None:
        super().__init__()
        self.committed = threading.Event()

    def write(self, text: str) -> int:
        if re.search(r"shards [1-9]\d*/", text):
            self.committed.set()
        return super().write(text)


@pytest.fixture(scope="module")
def cluster(tiny_models: dict[str, Path]) -> Iterator[Cluster]:
    """A head (2 CPUs, no GPU, no image_node) and one image node. The session's local Ray is shut down for the while
    and started again after, as the `ray_local` fixture starts it; RAY_TMPDIR keeps this cluster's files, and the
    address file that `ray.init()` looks for, away from every other Ray on the machine."""
    was_running = ray.is_initialized()
    ray.shutdown()
    temp = tempfile.mkdtemp(prefix="seir-rc-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", temp)
        # Notice a dead node within seconds rather than Ray's default ~30 s.
        health = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                  "health_check_failure_threshold": 4}
        cluster = Cluster(initialize_head=True, connect=True, head_node_args={
            "num_cpus": 2, "include_dashboard": False, "_system_config": health})
        try:
            cluster.add_node(**IMAGE_NODE)
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
    if was_running:
        start_local_ray()


def image_job(folder: Path, name: str, topics: list[str], fault: str) -> Path:
    record = folder / "record"
    record.mkdir(parents=True)
    # One shard at a time, so that the first commit comes before the last shard's first render.
    job = job_dict(name, topics=topics, seir={"turns": 1, "rounds": 0},
                   execution={"shard_size": 2, "shards_in_flight": 1})
    job["roles"]["image"] |= {"backend": "tests.engine.run.test_cluster:RecordingImage", "num_gpus": 0.5,
                              "resources": {"image_node": 1}, "options": {"record": str(record), "fault": fault}}
    return write_job(folder, job)


def image_starts(job: Path) -> list[dict[str, Any]]:
    """Where each process the image backend started in was placed: its node and the GPUs Ray gave it."""
    return [json.loads(p.read_text()) for p in (job.parent / "record").glob("start-*")]


def check_every_seed_made_once(job: Path, out: Path) -> None:
    seeds = {seed.seed_id for seed in load_seeds(load_job(job).seeds).seeds}
    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        made = con.execute("""SELECT s.seed_id, count(d.dialogue_key)
                              FROM (SELECT DISTINCT seed_key, seed_id FROM seeds) s JOIN dialogues d USING (seed_key)
                              GROUP BY ALL""").fetchall()
        assert con.execute("SELECT count(*) FROM shards WHERE status <> 'committed'").fetchone() == (0,)
        failed_calls = con.execute("SELECT reason FROM drafts WHERE reason LIKE '% failed: %'").fetchall()
    assert dict(made) == dict.fromkeys(seeds, 1), "every seed has exactly one dialogue"
    assert failed_calls == [], "calls hit by the fault were retried, not failed"


def test_cluster_yaml_passes_the_launchers_own_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config = prepare_config(raw)  # what `ray up` does before it talks to the cloud: defaults filled in, then checked
    validate_config(config)
    nodes = config["available_node_types"]
    assert nodes["image"]["resources"]["image_node"] >= 1 and nodes["image"]["resources"]["GPU"] >= 1
    assert nodes["gpu"]["resources"]["GPU"] >= 1 and "image_node" not in nodes["gpu"]["resources"]
    setup = config["setup_commands"]
    torch_step = next(i for i, c in enumerate(setup) if "torch==" in c)
    seir_step = next(i for i, c in enumerate(setup) if "install -q -e ~/seir" in c)
    assert torch_step < seir_step, "torch goes in first, so installing seir does not pull another build"
    assert f"ray[default]=={ray.__version__}" in " ".join(setup), "nodes run the Ray this machine submits with"
    assert "~/.ray/auth_token" in config["file_mounts"]
    for start in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert "RAY_AUTH_MODE=token" in start[-1]
    # Every custom resource the example jobs ask for is one a node type offers, or their actors would never start.
    offered = {name for node in nodes.values() for name in node["resources"]}
    for job in (REPO / "jobs").glob("*.yaml"):
        for role, spec in load_job(job).roles.items():
            assert set(spec.resources) <= offered, f"{job.name}: roles.{role}.resources"


def test_image_actors_land_on_the_image_node_and_a_crashed_actor_is_retried(cluster: Cluster,
                                                                             tmp_path: Path) -> None:
    image_node = next(iter(cluster.worker_nodes)).node_id
    job = image_job(tmp_path, "placed", TOPICS[:2], fault="exit")
    Runner(load_job(job), tmp_path / "out", stream=io.StringIO()).run()

    started = image_starts(job)
    assert len(started) >= 2, "the actor that killed itself was started again"
    assert {s["node"] for s in started} == {image_node}, "image actors run where image_node is, and only there"
    assert all(len(s["gpus"]) == 1 for s in started), "each holds (half of) the node's one GPU"
    check_every_seed_made_once(job, tmp_path / "out")


def test_a_node_killed_mid_run_loses_and_duplicates_nothing(cluster: Cluster, tmp_path: Path) -> None:
    doomed = next(iter(cluster.worker_nodes))
    job = image_job(tmp_path, "survivor", TOPICS[:4], fault="hang")
    log = Log()
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(Runner(load_job(job), tmp_path / "out", stream=log).run)
        assert log.committed.wait(300), log.getvalue()
        # A shard is committed; the next render blocks on the image node, which then dies with that call in flight.
        (job.parent / "record" / "armed").touch()
        deadline = time.monotonic() + 120
        while not (job.parent / "record" / "fired").exists():
            assert time.monotonic() < deadline and not run.done(), log.getvalue()
            time.sleep(0.2)
        cluster.remove_node(doomed, allow_graceful=False)
        replacement = cluster.add_node(**IMAGE_NODE)
        run.result(timeout=300)

    nodes = {s["node"] for s in image_starts(job)}
    assert nodes == {doomed.node_id, replacement.node_id}, "the image actor moved to the new node"
    check_every_seed_made_once(job, tmp_path / "out")
