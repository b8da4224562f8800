"""Preference pairs at scale (issue 24): how `seir export --format trl-dpo|sharegpt-dpo` grows with the dataset
when every round holds several candidates and the judge compared them pairwise.

The source is a real output of the demo job on the tiny models with ``seir.candidates: 3`` and ``seir.pairwise:
record`` (8 seeds; or ``--source OUT``). Its store is replicated to N dialogues (bench_snapshots.replicate: every key
and long text gets a per-copy suffix), then, per size:

- the pairs of every stage, sibling and refinement pairs both, as the store holds them (``rows.stored_pairs``, paged
  and memory-capped as an export runs it), rows per second;
- a whole `sharegpt-dpo` export of the question stage's pairs (``--stages question``: the replicated messages and
  image keys name no real files, and question pairs need neither), pairs per second.

The ideal is linear: time per dialogue flat from 1x to 10x to 100x.

    .venv/bin/python bench/bench_pairs.py --sizes 1000 10000 100000
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bench_readers import job_file  # noqa: E402
from bench.bench_snapshots import replicate  # noqa: E402
from seir.engine.export import ExportOptions, export  # noqa: E402
from seir.engine.export.rows import PairOptions, pair_stages, stored_pairs  # noqa: E402
from seir.engine.store import limit_memory, output_stages  # noqa: E402


def source_output(work: Path) -> Path:
    job = job_file(work, seeds=8)
    spec = yaml.safe_load(job.read_text())
    spec["seir"] = {**spec["seir"], "candidates": 3, "pairwise": "record"}
    job.write_text(yaml.safe_dump(spec))
    out = work / "source"
    subprocess.run([sys.executable, "-m", "seir.engine.cli", "run", str(job), "--out", str(out)], check=True,
                   stderr=subprocess.DEVNULL)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="an output made with seir.candidates above 1")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pairs-"))
    source = args.source or source_output(work)
    print("| dialogues | store MB | pair rows (all stages) | query s | rows/s | s per 1k dialogues | question pairs "
          "exported | export s | pairs/s |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        out = work / f"x{size}"
        megabytes = replicate(source / "provenance.duckdb", out / "provenance.duckdb", size) / 1e6
        with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
            version = con.execute("SELECT max(version) FROM versions").fetchall()[0][0]
            dialogues = con.execute("SELECT count(*) FROM version_dialogues WHERE version = ? AND accepted",
                                    [version]).fetchall()[0][0]
            started = time.perf_counter()
            limit_memory(con, work / "spill")  # as an export caps it
            every_stage = PairOptions(pair_stages(output_stages(con), None, text_only=False))
            rows = sum(1 for _ in stored_pairs(con, version, every_stage))
            query = time.perf_counter() - started
        started = time.perf_counter()
        written = export(out, work / f"export-{size}", ExportOptions("sharegpt-dpo", stages=("question",)),
                         stream=io.StringIO())
        exported = time.perf_counter() - started
        pairs = sum(sum(tables.values()) for tables in written.rows.values())
        print(f"| {dialogues:,} | {megabytes:,.0f} | {rows:,} | {query:.2f} | {rows / query:,.0f} | "
              f"{query / dialogues * 1000:.3f} | {pairs:,} | {exported:.2f} | {pairs / exported:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
