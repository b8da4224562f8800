"""Issue 25 benchmark: what a snapshot, a restore and the integrity checks cost as the store grows to 100k dialogues.

A real demo output (8 seeds, the demo job; or ``--source OUT``) is the shape. Its tables are replicated to N
dialogues, every key and id column made distinct per copy and every long text column too, so the store neither
collapses into DuckDB's dictionaries nor violates a key. Its bytes per dialogue are printed beside the source's.
For each N:

- the snapshot (``take_snapshot``: a copy hashed while it is read, flushed to disk), against a plain copy of the same
  file flushed to disk, in the same run (the ideal: a durable copy that does nothing else);
- the restore (verify the snapshot's hash, copy it back);
- the open checks (``check_opened``): a reader's (blocks in use, constant) and a writer's, once per command (every
  table's block list: metadata only, growing with the store's row groups);
- the full read (``read_every_block``: what ``seir check`` and a writer's first open after an outside change do);
- ``seir check`` whole, in a fresh process: its time and that process's peak memory (VmHWM). The replica's image
  keys name no files, so it pages through every key and counts every one missing (the bounded problem list), without
  the per-file hashing a real output adds.

    python bench/bench_snapshots.py --sizes 1000 10000 100000 --reps 3

Prints medians. Needs about 2.5x the largest store in free disk under --work.
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
from collections.abc import Callable
from pathlib import Path

import duckdb

from seir.engine.store.integrity import check_opened, read_every_block
from seir.engine.store.snapshots import restore_snapshot, take_snapshot

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_readers import job_file  # noqa: E402

LONG_TEXT = 64  # text columns whose values run past this many characters get a per-copy suffix too


def source_output(work: Path, given: Path | None) -> Path:
    if given is not None:
        return given
    out = work / "source"
    job = job_file(work, seeds=8)
    subprocess.run([sys.executable, "-m", "seir.engine.cli", "run", str(job), "--out", str(out)], check=True,
                   stderr=subprocess.DEVNULL)
    return out


def replicate(source: Path, target: Path, dialogues: int) -> int:
    """A store of ``dialogues`` dialogues from ``source``'s tables; returns its size in bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(target))
    con.execute(f"ATTACH '{source}' AS src (READ_ONLY)")
    per_copy = con.execute("SELECT count(*) FROM src.dialogues").fetchall()[0][0]
    copies = -(-dialogues // per_copy)
    tables = [row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'src' ORDER BY 1").fetchall()]
    for table in tables:
        columns = con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = 'src' "
                              "AND table_name = ?", [table]).fetchall()
        if table == "meta":
            con.execute(f"CREATE TABLE meta AS SELECT * FROM src.{table}")
            continue
        def longest(name: str, table: str = table) -> int:
            return con.execute(f'SELECT coalesce(max(length("{name}")), 0) FROM src."{table}"').fetchall()[0][0]

        varied = [name for name, kind in columns
                  if kind == "VARCHAR" and (name.endswith(("_key", "_id")) or longest(name) > LONG_TEXT)]
        # Lists of keys (a draft's call keys) are suffixed too, so each copy's rows still find each other.
        key_lists = [name for name, kind in columns if kind == "VARCHAR[]" and name.endswith("_keys")]
        replaced = ", ".join([*(f'"{c}" || \'~\' || copy AS "{c}"' for c in varied),
                              *(f'list_transform("{c}", lambda k: k || \'~\' || copy) AS "{c}"' for c in key_lists)])
        select = f"* REPLACE ({replaced})" if replaced else "*"
        con.execute(f'CREATE TABLE "{table}" AS SELECT {select} FROM src."{table}", range({copies}) AS r(copy)')
        con.execute(f'ALTER TABLE "{table}" DROP COLUMN IF EXISTS copy')
    con.execute("DETACH src")
    con.execute("CHECKPOINT")
    con.close()
    return target.stat().st_size


def durable_copy(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())


# VmHWM, not ru_maxrss: a forked child's ru_maxrss can carry the parent's peak across exec.
CHECK = """
import sys, time
from pathlib import Path
from seir.engine.store.check import check_output
started = time.perf_counter()
report = check_output(Path(sys.argv[1]), [], open("/dev/null", "w"))
peak_kb = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(time.perf_counter() - started, report.problem_count, peak_kb)
"""


def seir_check(out: Path) -> tuple[float, int, float]:
    """``check_output`` in a fresh process: seconds, problems found, peak MB."""
    done = subprocess.run([sys.executable, "-c", CHECK, str(out)], capture_output=True, text=True, check=True)
    seconds, problems, peak_kb = done.stdout.split("\n")[-2].split()  # the last line: what CHECK prints
    return float(seconds), int(problems), int(peak_kb) / 1024


def timed(action: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--source", type=Path, default=None, help="a finished output to take the shape from")
    parser.add_argument("--work", type=Path, default=None, help="where the stores go (default: a temp folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-snapshots-", dir=args.work))
    try:
        source = source_output(work, args.source)
        store = source / "provenance.duckdb"
        with duckdb.connect(str(store), read_only=True) as con:
            per_dialogue = store.stat().st_size / con.execute("SELECT count(*) FROM dialogues").fetchall()[0][0]
        print(f"source {source}: {per_dialogue / 1024:.0f} KiB of store per dialogue")
        print("| dialogues | store MB | KiB/dialogue | snapshot s | copy+fsync s | snapshot/copy | MB/s "
              "| restore s | reader's open check ms | writer's open check ms | full read s | seir check s | problems "
              "| check peak MB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for dialogues in args.sizes:
            out = work / f"out-{dialogues}"
            size = replicate(store, out / "provenance.duckdb", dialogues)
            (out / "versions").mkdir()
            copy_s = timed(lambda out=out: durable_copy(out / "provenance.duckdb", work / "cp.duckdb"), args.reps)
            (work / "cp.duckdb").unlink()

            def snapshot(out: Path = out) -> None:
                shutil.rmtree(work / "snap", ignore_errors=True)
                take_snapshot(out, work / "snap")

            snapshot_s = timed(snapshot, args.reps)
            restore_s = timed(lambda out=out: restore_snapshot(out, work / "snap"), 1)
            for aside in out.glob("provenance.duckdb.before-restore-*"):
                aside.unlink()
            path = out / "provenance.duckdb"
            with duckdb.connect(str(path), read_only=True) as con:
                reader_s = timed(lambda con=con, path=path: check_opened(con, path, False), args.reps)
                writer_s = timed(lambda con=con, path=path: check_opened(con, path, True), args.reps)
                read_s = timed(lambda con=con: read_every_block(con), args.reps)
            check_s, problems, check_mb = seir_check(out)
            print(f"| {dialogues:,} | {size / 1e6:,.0f} | {size / dialogues / 1024:.0f} | {snapshot_s:.2f} | "
                  f"{copy_s:.2f} | {snapshot_s / copy_s:.2f} | {size / 1e6 / snapshot_s:,.0f} | {restore_s:.2f} | "
                  f"{reader_s * 1000:.1f} | {writer_s * 1000:.0f} | {read_s:.2f} | {check_s:.2f} | {problems:,} | "
                  f"{check_mb:.0f} |", flush=True)
            shutil.rmtree(out)
            shutil.rmtree(work / "snap", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
