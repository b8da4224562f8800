"""Issue 12 benchmark: image-grounded dialogues beside text ones, and the driver's memory while loading image seeds.

1. Dialogues per minute over the shard phase (pools loaded) of ``jobs/demo-images.yaml`` beside ``jobs/demo.yaml``
   limited to as many seeds, on one local Ray; the ratio is images / text.
2. The driver's peak memory (max RSS of a fresh process) loading a seed file of N image seeds, each bringing its own
   distinct picture, into an image store, for a small and a large N. Beside it, in the same run, the peer that held
   every loaded picture in memory (what loading did before: a dict of all seed images' bytes). Target: flat, a
   large/small ratio near 1.0.

    python bench/bench_images.py --small 100 --large 10000 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# Loads the seed file in a fresh interpreter and prints its peak RSS in MiB: streaming stores each picture as it is
# read; "held" keeps every picture's bytes too, as the loader did before.
_LOAD = """
import resource, sys
from pathlib import Path
from seir.engine.store import ImageStore
from seir.engine.seeds import load_seeds
from seir.engine.spec import SeedSpec
store, held = ImageStore(Path(sys.argv[2])), []
def put(data):
    if sys.argv[3] == "held":
        held.append(data)
    return store.put(data)
load = load_seeds(SeedSpec(files=[Path(sys.argv[1])]), put)
assert len(load.seeds) == int(sys.argv[4]) and not load.quarantined, (len(load.seeds), load.quarantined[:3])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def write_image_seeds(folder: Path, n: int, side: int = 96) -> Path:
    """``n`` seeds, each with its own noise picture (PNG, incompressible: ~28 KB at 96 px)."""
    rng = np.random.default_rng(n)
    pictures = folder / "pictures"
    pictures.mkdir(parents=True)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(pictures / f"{i}.png")
        lines.append(json.dumps({"id": f"s{i}", "text": f"What is in picture {i}?", "images": [f"pictures/{i}.png"]}))
    path = folder / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def peak_mib(seeds: Path, n: int, mode: str) -> float:
    with tempfile.TemporaryDirectory(prefix="seir-bench-store-") as store:
        done = subprocess.run([sys.executable, "-c", _LOAD, str(seeds), store, mode, str(n)], capture_output=True,
                              text=True, check=True)
    return float(done.stdout.strip())


def memory(small: int, large: int) -> None:
    print(f"driver peak RSS loading image seeds (MiB), {small} vs {large} seeds, one distinct picture each")
    print(f"{'mode':>10} {small:>10} {large:>10} {'ratio':>8}")
    with tempfile.TemporaryDirectory(prefix="seir-bench-seeds-") as folder:
        files = {n: write_image_seeds(Path(folder) / str(n), n) for n in (small, large)}
        size = sum(p.stat().st_size for p in (Path(folder) / str(large) / "pictures").iterdir()) / 2**20
        for mode in ("streamed", "held"):
            a, b = peak_mib(files[small], small, mode), peak_mib(files[large], large, mode)
            print(f"{mode:>10} {a:>10.1f} {b:>10.1f} {b / a:>8.2f}", flush=True)
    print(f"(the {large} pictures take {size:.0f} MiB on disk)")


def dialogues_per_minute(job: Path, limit: int | None = None, seir: dict[str, Any] | None = None,
                         roles: dict[str, dict[str, Any]] | None = None) -> tuple[float, int, float]:
    """A run of ``job`` into a fresh output (its first ``limit`` seeds; the given ``seir`` and ``roles`` settings
    replaced):
    dialogues per minute over the shard phase, dialogues made, and that phase's seconds."""
    from seir.engine.run import Runner
    from seir.engine.spec import load_job

    spec = load_job(job)
    if limit is not None:
        spec = spec.model_copy(update={"seeds": spec.seeds.model_copy(update={"limit": limit})})
    spec = spec.model_copy(update={"seir": spec.seir.model_copy(update=seir or {}),
                                   "roles": {**spec.roles, **{name: spec.roles[name].model_copy(update=changes)
                                                              for name, changes in (roles or {}).items()}}})
    with tempfile.TemporaryDirectory(prefix="seir-bench-") as folder:
        summary = Runner(spec, Path(folder), stream=io.StringIO()).run()
    made = summary["accepted"] + summary["rejected"]
    return made / summary["shards_s"] * 60, made, summary["shards_s"]


def throughput(repeats: int) -> None:
    """Both demos on one local Ray, each into fresh outputs ``repeats`` times (medians); demo.yaml limited to as many
    seeds as demo-images.yaml has."""
    import ray

    images_job = REPO / "jobs" / "demo-images.yaml"
    seeds = sum(1 for line in (images_job.parent / "data" / "images" / "seeds.jsonl").open() if line.strip())
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print(f"dialogues per minute over the shard phase, {seeds} seeds per job, median of {repeats}")
    rates = {}
    for job, limit in ((REPO / "jobs" / "demo.yaml", seeds), (images_job, None)):
        runs = [dialogues_per_minute(job, limit) for _ in range(repeats)]
        rate, made, seconds = (statistics.median(run[i] for run in runs) for i in range(3))
        rates[job.name] = rate
        print(f"{job.name:>18}: {rate:6.1f} dialogues/min ({made:.0f} dialogues in {seconds:.1f} s)", flush=True)
    print(f"images / text: {rates['demo-images.yaml'] / rates['demo.yaml']:.2f}")
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-throughput", action="store_true", help="the memory part only")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each demo for the throughput medians")
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=10_000)
    args = parser.parse_args()
    memory(args.small, args.large)
    if not args.no_throughput:
        throughput(args.repeats)


if __name__ == "__main__":
    main()
