"""Issue 15 benchmark: what readable provenance costs a run. The demo job (fewer seeds, so it fits a short bench)
runs as `seir run` in a subprocess, alone and then with two readers polling every second (seir's run_sql in a
long-lived Python process, and the DuckDB CLI), each in a fresh output folder, alternating.

    python bench/bench_readers.py --seeds 8 --reps 1

Prints each wall time, the median ratio with readers / without (target: under 1.05), and the readers' answer times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
QUERY = "SELECT count(*) FROM shards WHERE status = 'committed'"
READER = """
import sys, time
from pathlib import Path
from seir.engine.query import run_sql
out = Path(sys.argv[1])
while True:
    if (out / "provenance.duckdb").exists():
        started = time.monotonic()
        run_sql(out, sys.argv[2])
        print(time.monotonic() - started, flush=True)
    time.sleep(1.0)
"""


def job_file(folder: Path, seeds: int) -> Path:
    spec = yaml.safe_load((ROOT / "jobs" / "demo.yaml").read_text())
    spec["seeds"]["topics"] = spec["seeds"]["topics"][:seeds]
    spec["seeds"].pop("limit", None)
    spec["execution"] = {**spec.get("execution", {}), "shard_size": 2}
    path = folder / "bench-readers.yaml"
    path.write_text(yaml.safe_dump(spec))
    for name in ("data",):  # relative seed files, if the demo names any
        if (ROOT / "jobs" / name).exists() and not (folder / name).exists():
            (folder / name).symlink_to(ROOT / "jobs" / name)
    return path


def one_run(job: Path, out: Path, readers: bool) -> tuple[float, list[float]]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    polling: list[subprocess.Popen[str]] = []
    cli = shutil.which("duckdb", path=str(Path(sys.executable).parent))
    if readers:
        polling.append(subprocess.Popen([sys.executable, "-c", READER, str(out), QUERY], stdout=subprocess.PIPE,
                                        text=True, env=env))
        if cli:
            loop = (f'while true; do if [ -f "{out}/provenance.duckdb" ]; then s=$(date +%s.%N); '
                    f'until "{cli}" -readonly "{out}/provenance.duckdb" "{QUERY}" >/dev/null 2>&1; do sleep 0.02; '
                    f'done; e=$(date +%s.%N); echo "$e - $s" | bc; fi; sleep 1; done')
            polling.append(subprocess.Popen(["bash", "-c", loop], stdout=subprocess.PIPE, text=True, env=env))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "seir.engine.cli", "run", str(job), "--out", str(out)], check=True,
                   env=env, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - started
    answers: list[float] = []
    for process in polling:
        process.terminate()
        text, _ = process.communicate()
        answers += [float(x) for x in text.split() if x.strip()]
    return wall, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        job = job_file(folder, args.seeds)
        alone, with_readers, answers = [], [], []
        for rep in range(args.reps):
            for readers in (False, True):
                wall, seen = one_run(job, folder / f"out-{rep}-{readers}", readers)
                (with_readers if readers else alone).append(wall)
                answers += seen
                print(f"rep {rep} {'with readers' if readers else 'alone':>12}: {wall:.1f}s"
                      + (f" ({len(seen)} answers)" if readers else ""), flush=True)
    ratio = statistics.median(with_readers) / statistics.median(alone)
    print(f"median wall alone {statistics.median(alone):.1f}s, with readers {statistics.median(with_readers):.1f}s, "
          f"ratio {ratio:.3f} (target < 1.05)")
    if answers:
        print(f"reader answers: {len(answers)}, median {statistics.median(answers) * 1000:.0f} ms, "
              f"max {max(answers) * 1000:.0f} ms (target < 2000 ms)")


if __name__ == "__main__":
    main()
