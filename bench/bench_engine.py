"""Issue 2 benchmark: dialogues per minute of a job, and the engine's own overhead, at several shards in flight.

For each setting the job runs into a fresh output folder on one local Ray (started once), and the provenance store
says how long every batched model call took inside its actor. Printed per setting (median over repeats):

- dialogues/min over the shard phase (pools already loaded);
- overhead = shard-phase wall time / time spent inside model calls, all roles added up (below 1 means pools
  overlap; the engine's own work, Ray hops and waits show up as the excess over the ideal);
- busiest-pool efficiency = busy time of the busiest pool / wall time: the ideal is 1.0, when the bottleneck
  pool never waits on the engine.

    python bench/bench_engine.py --job jobs/demo.yaml --in-flight 1 2 4 --repeats 3

``--intersyn`` runs the same job two ways in one invocation: as configured (batched, shards in flight), and InterSyn's
way, one call at a time (one dialogue per shard, batch size 1 for every role, one shard in flight); it checks that
both made the same dataset (every dialogue's messages) and prints the speedup of the shard phase.

``--real-size DIR`` swaps the llm, judge and image models for random-weight ones at real architecture sizes (a
Qwen2.5-0.5B-shaped LM, a LLaVA judge of it with a CLIP ViT-L/14-336 tower, an SD 2.1-base-shaped pipeline at
512x512; bench/real_size.py), built from configs into DIR on first use: GPU figures with nothing to download.
``--check-sizes`` only builds them on the meta device and prints their parameter counts (a CPU machine's check).

    python bench/bench_engine.py --job jobs/demo.yaml --intersyn --real-size /tmp/real-models
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import ray
import real_size  # bench/real_size.py, beside this script

from seir.engine.run import Runner
from seir.engine.spec import JobSpec, load_job
from seir.engine.store import ImageStore


def model_seconds(out: Path) -> dict[str, float]:
    """Seconds each role's actors spent inside backend calls (each batch counted once)."""
    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        rows = con.execute("""SELECT role, sum(latency_ms) / 1000 FROM (
                                  SELECT role, batch_id, any_value(latency_ms) AS latency_ms FROM model_calls
                                  WHERE NOT cached GROUP BY ALL) GROUP BY role""").fetchall()
    return dict(rows)


@dataclass
class Made:
    """What a run made: every dialogue's messages, and every draft's text, caption and image bytes."""

    messages: dict[str, str]
    drafts: dict[str, tuple[str, str, bytes | None]]


def made_by(out: Path) -> Made:
    images = ImageStore(out)
    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        messages = dict(con.execute("SELECT dialogue_key, messages::VARCHAR FROM dialogues").fetchall())
        drafts = {key: (text, caption, images.get(image) if image else None) for key, text, caption, image
                  in con.execute("SELECT draft_key, text, caption, image_key FROM drafts").fetchall()}
    return Made(messages, drafts)


def pixel_difference(a: bytes, b: bytes) -> int:
    """Largest per-channel difference between two images of the same size (0-255)."""
    from PIL import Image

    def pixels(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as picture:
            return np.asarray(picture.convert("RGB"), dtype=np.int16)

    return int(np.abs(pixels(a) - pixels(b)).max())


def with_execution(spec: JobSpec, **settings: int) -> JobSpec:
    return spec.model_copy(update={"execution": spec.execution.model_copy(update=settings)})


def one_at_a_time(spec: JobSpec) -> JobSpec:
    """InterSyn's way: one dialogue per shard, one request per call for every role, one shard in flight."""
    roles = {name: role.model_copy(update={"batch_size": 1, "max_concurrency": 1})
             for name, role in spec.roles.items()}
    return with_execution(spec.model_copy(update={"roles": roles}), shard_size=1, shards_in_flight=1)


def real_sized(spec: JobSpec, directory: Path) -> JobSpec:
    paths = real_size.build(directory)
    models = {"llm": paths["llm"], "judge": paths["judge"], "image": paths["sd"]}
    roles = {name: role.model_copy(update={"model": str(models[name])}) if name in models else role
             for name, role in spec.roles.items()}
    seir = spec.seir.model_copy(update={"image_width": 512, "image_height": 512})
    return spec.model_copy(update={"roles": roles, "seir": seir})


def one_run(spec: JobSpec, keep: dict[str, Made] | None = None, label: str = "") -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="seir-bench-") as folder:
        runner = Runner(spec, Path(folder), stream=io.StringIO())
        summary = runner.run()
        busy = model_seconds(Path(folder))
        if keep is not None:
            keep[label] = made_by(Path(folder))
    wall = summary["shards_s"]
    dialogues = summary["accepted"] + summary["rejected"]
    return {
        "startup_s": summary["startup_s"],
        "shards_s": wall,
        "dialogues_per_min": dialogues / wall * 60,
        "model_s": sum(busy.values()),
        "overhead": wall / sum(busy.values()),
        "busiest_efficiency": max(busy.values()) / wall,
        "busiest_role": max(busy, key=busy.__getitem__),
    }


def compare_intersyn(spec: JobSpec, repeats: int) -> None:
    """The job batched as configured, then one call at a time; same dataset, and the speedup."""
    made: dict[str, Made] = {}
    ways = {"batched": spec, "one at a time": one_at_a_time(spec)}
    print(f"{'way':<14} {'dialogues/min':>13} {'shard phase s':>13} {'model s':>8} {'pool start s':>12}")
    phase = {}
    for way, settings in ways.items():
        runs = [one_run(settings, made, way) for _ in range(repeats)]
        phase[way] = statistics.median(r["shards_s"] for r in runs)
        print(f"{way:<14} {statistics.median(r['dialogues_per_min'] for r in runs):>13.1f} {phase[way]:>13.1f} "
              f"{statistics.median(r['model_s'] for r in runs):>8.1f} "
              f"{statistics.median(r['startup_s'] for r in runs):>12.1f}", flush=True)
    batched, single = made["batched"], made["one at a time"]
    differing = sum(batched.messages.get(key) != messages for key, messages in single.messages.items())
    same = batched.messages.keys() == single.messages.keys() and not differing
    print(f"same dataset: {'yes' if same else 'NO'} ({len(batched.messages)} dialogues batched, "
          f"{len(single.messages)} one at a time, {differing} with other messages)")
    if not same:  # where the two ways part: the first drafts (same key = same inputs) whose outputs differ
        both = batched.drafts.keys() & single.drafts.keys()
        texts = sum(batched.drafts[k][:2] == single.drafts[k][:2] for k in both)
        renders = [k for k in both if batched.drafts[k][2] is not None and single.drafts[k][2] is not None]
        other = [k for k in renders if batched.drafts[k][2] != single.drafts[k][2]]
        worst = max((pixel_difference(batched.drafts[k][2], single.drafts[k][2]) for k in other), default=0)
        print(f"  drafts made with the same inputs both ways: {len(both)}; same text {texts}; renders with other "
              f"bytes {len(other)} of {len(renders)} (largest pixel difference {worst}/255)")
    print(f"speedup of batching: {phase['one at a time'] / phase['batched']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", type=Path, default=Path("jobs/demo.yaml"))
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--intersyn", action="store_true", help="compare with one call at a time, InterSyn's way")
    parser.add_argument("--real-size", type=Path, help="build real-size random-weight models here and use them")
    parser.add_argument("--limit", type=int, help="only the first N topics (a quick smoke run)")
    parser.add_argument("--check-sizes", action="store_true", help="print the real-size models' parameter counts")
    args = parser.parse_args()
    if args.check_sizes:
        for name in real_size.NAMES:
            print(f"{name}: {real_size.parameters(name) / 1e6:.0f}M parameters")
        return
    spec = load_job(args.job)
    if args.limit:
        spec = spec.model_copy(update={"seeds": spec.seeds.model_copy(update={"limit": args.limit})})
    if args.real_size:
        spec = real_sized(spec, args.real_size)
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print(f"job {args.job}{' with real-size models' if args.real_size else ''}, {args.repeats} repeat(s) per "
          f"setting, medians")
    if args.intersyn:
        compare_intersyn(spec, args.repeats)
        ray.shutdown()
        return
    print(f"{'in flight':>9} {'dialogues/min':>13} {'shard phase s':>13} {'model s':>8} {'overhead':>8} "
          f"{'busiest pool efficiency':>24} {'pool start s':>12}")
    for in_flight in args.in_flight:
        runs = [one_run(with_execution(spec, shards_in_flight=in_flight)) for _ in range(args.repeats)]

        def median(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(float(r[key]) for r in runs)

        print(f"{in_flight:>9} {median('dialogues_per_min'):>13.1f} {median('shards_s'):>13.1f} "
              f"{median('model_s'):>8.1f} {median('overhead'):>8.2f} "
              f"{median('busiest_efficiency'):>17.2f} ({runs[0]['busiest_role']}) {median('startup_s'):>12.1f}",
              flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
