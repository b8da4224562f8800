"""Best-of-N (issue 24): what N candidates per round cost and what they buy, on the demo job.

For each N the job runs into a fresh output folder on local Ray with ``seir.candidates: N`` (every stage), then
provenance is read:

- computed calls and tokens (in + out) per role, and wall time with the model pools' start left out, each against
  N = 1 measured in the same run of this script (the ideal for batched candidates: calls grow N-fold, wall time less,
  because a round's N candidates share each batched call);
- the best-of-N gain per dimension, from the report's numbers (``report.best_of_n_means``): the first round's best
  of N candidates against its first candidate, beside the refinement gain (the kept draft after refinement against
  the first round's best).

Each N runs ``--reps`` times into fresh folders; wall times are medians (calls, tokens and scores repeat exactly:
sampling is seeded).

    .venv/bin/python bench/bench_candidates.py --job jobs/demo.yaml --candidates 1 2 4 --reps 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from seir.engine.export.report import best_of_n_means
from seir.engine.run import Runner
from seir.engine.spec import load_job

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", type=Path, default=ROOT / "jobs" / "demo.yaml")
    parser.add_argument("--candidates", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--pairwise", choices=["off", "record", "rank"], default="off")
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    base = load_job(args.job)
    rows = []
    for n in args.candidates:
        spec = base.model_copy(update={"seir": base.seir.model_copy(update={"candidates": n,
                                                                            "pairwise": args.pairwise})})
        walls = []
        for _ in range(args.reps):
            out = Path(tempfile.mkdtemp(prefix=f"bench-candidates-{n}-")) / "out"
            runner = Runner(spec, out, stream=io.StringIO())
            started = time.perf_counter()
            summary = runner.run()
            walls.append(time.perf_counter() - started - runner.timings.get("startup_s", 0.0))
        wall = statistics.median(walls)
        with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
            computed = "FROM model_calls WHERE NOT cached"
            usage = dict(con.execute(f"SELECT role, count(*) {computed} GROUP BY role").fetchall())
            tokens = con.execute(f"SELECT sum(tokens_in + tokens_out) {computed}").fetchall()[0][0]
            gains = best_of_n_means(con, con.execute("SELECT max(version) FROM versions").fetchall()[0][0])
        rows.append((n, usage, tokens, wall, summary["accepted"] + summary["rejected"], gains))
        print(f"N={n}: {sum(usage.values())} computed calls, {tokens} tokens, wall without pool start "
              f"{', '.join(f'{w:.1f}' for w in walls)} s (median {wall:.1f})", flush=True)
    one = rows[0]
    roles = sorted({role for _, usage, *_ in rows for role in usage})
    print(f"\njob {base.name}, pairwise {args.pairwise}, median of {args.reps}; ratios against N={one[0]} of this "
          "run\n")
    print("| N | dialogues | " + " | ".join(f"{r} calls" for r in roles) + " | calls ratio | tokens | tokens ratio "
          "| wall s (no pool start) | wall ratio |")
    print("|---:" * (len(roles) + 7) + "|")
    for n, usage, tokens, wall, dialogues, _ in rows:
        calls = sum(usage.values())
        print(f"| {n} | {dialogues} | " + " | ".join(str(usage.get(r, 0)) for r in roles)
              + f" | {calls / sum(one[1].values()):.2f} | {tokens} | {tokens / one[2]:.2f} | {wall:.1f} "
                f"| {wall / one[3]:.2f} |")
    print("\nbest-of-N gain per dimension (first round: best of N candidates minus the first candidate) and "
          "refinement gain (kept draft minus the first round's best):\n")
    print("| N | dimension | first candidate | best of N | best-of-N gain | refined | refinement gain |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n, *_, gains in rows:
        for dimension, means in sorted(gains.items()):
            best = means[str(n)]
            print(f"| {n} | {dimension} | {means['1']:.3f} | {best:.3f} | {best - means['1']:+.3f} | "
                  f"{means['refined']:.3f} | {means['refined'] - best:+.3f} |")


if __name__ == "__main__":
    main()
