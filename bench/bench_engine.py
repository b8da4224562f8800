"""Issue 2 benchmark: dialogues per minute of a job, and the engine's own overhead, at several shards in flight.

For each setting the job runs into a fresh output folder on one local Ray (started once), and the provenance store
says how long every batched model call took inside its actor. Printed per setting (median over repeats):

- dialogues/min over the shard phase (pools already loaded);
- overhead = shard-phase wall time / time spent inside model calls, all roles added up (below 1 means pools
  overlap; the engine's own work, Ray hops and waits show up as the excess over the ideal);
- busiest-pool efficiency = busy time of the busiest pool / wall time: the ideal is 1.0, when the bottleneck
  pool never waits on the engine.

    python bench/bench_engine.py --job jobs/demo.yaml --in-flight 1 2 4 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
from pathlib import Path

import duckdb
import ray

from seir.engine.runner import Runner
from seir.engine.spec import load_job


def model_seconds(out: Path) -> dict[str, float]:
    """Seconds each role's actors spent inside backend calls (each batch counted once)."""
    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        rows = con.execute("""SELECT role, sum(latency_ms) / 1000 FROM (
                                  SELECT role, batch_id, any_value(latency_ms) AS latency_ms FROM model_calls
                                  WHERE NOT cached GROUP BY ALL) GROUP BY role""").fetchall()
    return dict(rows)


def one_run(job: Path, in_flight: int) -> dict[str, float]:
    spec = load_job(job)
    spec = spec.model_copy(update={"execution": spec.execution.model_copy(update={"shards_in_flight": in_flight})})
    with tempfile.TemporaryDirectory(prefix="seir-bench-") as folder:
        runner = Runner(spec, Path(folder), stream=io.StringIO())
        summary = runner.run()
        busy = model_seconds(Path(folder))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", type=Path, default=Path("jobs/demo.yaml"))
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print(f"job {args.job}, {args.repeats} repeat(s) per setting, medians")
    print(f"{'in flight':>9} {'dialogues/min':>13} {'shard phase s':>13} {'model s':>8} {'overhead':>8} "
          f"{'busiest pool efficiency':>24} {'pool start s':>12}")
    for in_flight in args.in_flight:
        runs = [one_run(args.job, in_flight) for _ in range(args.repeats)]

        def median(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(float(r[key]) for r in runs)

        print(f"{in_flight:>9} {median('dialogues_per_min'):>13.1f} {median('shards_s'):>13.1f} "
              f"{median('model_s'):>8.1f} {median('overhead'):>8.2f} "
              f"{median('busiest_efficiency'):>17.2f} ({runs[0]['busiest_role']}) {median('startup_s'):>12.1f}",
              flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
