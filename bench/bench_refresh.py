"""Issue 5 benchmark, refresh side: a refresh that adds 1% new seeds, against the full run it extends.

A job like the demo (tiny models, InterSyn's topics and templates) runs over N seeds into a fresh output; then the
same job with N + N/100 seeds refreshes it. A third run makes only the new seeds, into another folder, as the exact
reference for which model calls the refresh should make. Wall times exclude starting Ray and the model pools.

    python bench/bench_refresh.py --seeds 100

Targets: the refresh computes exactly the reference's calls; its wall time is under 5% of the full run's.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import duckdb
import ray

from seir.engine.runner import Runner
from seir.engine.spec import load_job

REPO = Path(__file__).resolve().parents[1]


def calls(out: Path) -> list[tuple[str, str]]:
    """The latest run's computed calls (role, content key)."""
    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        return con.execute("""SELECT role, call_key FROM model_calls WHERE NOT cached AND run_id =
                              (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1) ORDER BY ALL""").fetchall()


def run(job: Path, seeds: int, out: Path, skip: int = 0) -> dict[str, float]:
    spec = load_job(job)
    topics_file = REPO / "jobs" / "data" / "intersyn" / "topics.json"
    topics = json.loads(topics_file.read_text())[skip:seeds]
    seeds_spec = spec.seeds.model_copy(update={"topics": topics, "topics_file": None, "limit": None})
    spec = spec.model_copy(update={"seeds": seeds_spec})
    runner = Runner(spec, out, stream=io.StringIO())
    summary = runner.run()
    return {"wall_s": summary["wall_s"] - summary.get("startup_s", 0.0), "calls": len(calls(out))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", type=Path, default=REPO / "jobs" / "demo.yaml")
    parser.add_argument("--seeds", type=int, default=100)
    args = parser.parse_args()
    added = max(1, args.seeds // 100)
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="seir-bench-refresh-") as folder:
        out, reference_out = Path(folder) / "out", Path(folder) / "reference"
        full = run(args.job, args.seeds, out)
        refresh = run(args.job, args.seeds + added, out)
        refresh_calls = calls(out)
        reference = run(args.job, args.seeds + added, reference_out, skip=args.seeds)
        exact = refresh_calls == calls(reference_out)
    ray.shutdown()
    print(f"full run: {args.seeds} seeds, {full['calls']} model calls, {full['wall_s']:.1f} s (pools started)")
    print(f"refresh adding {added} seed(s): {refresh['calls']} calls ({refresh['calls'] / full['calls']:.4f} of the "
          f"full run's, for {added / args.seeds:.4f} of its seeds), {refresh['wall_s']:.1f} s")
    print(f"calls equal a run of only the new seeds: {exact} ({reference['calls']} calls)")
    print(f"refresh wall time / full run: {refresh['wall_s'] / full['wall_s']:.3f} (target < 0.05)")


if __name__ == "__main__":
    main()
