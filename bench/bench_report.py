"""Issue 15 benchmark: building report.html at 100k dialogues. A synthetic store shaped like a real run's (the rows
of bench/bench_provenance.py: 22 drafts, 88 score rows and 110 model calls per dialogue, plus final turn scores,
decisions, a dedup pass and a version listing every dialogue) is built, then ``write_report`` is timed on it.

    python bench/bench_report.py --dialogues 100000

Target: under 30 s (the ratio printed is of that budget). On the same store it also times what a run pays for
being readable (docs/provenance.md): one unit of the writer, which opens the file, looks up 64 call keys in the cache,
checkpoints and closes, against the same look-up on a connection held open.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_provenance import batch

from seir.engine.export import write_report
from seir.engine.records import CONTENT_DIMENSIONS
from seir.engine.store import ProvenanceStore, now

TURNS = 3
THRESHOLDS = dict.fromkeys(CONTENT_DIMENSIONS, 2.5)


def scored(rng: np.random.Generator, tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """A batch's final turn scores and acceptance decisions."""
    keys = tables["dialogues"]["dialogue_key"].to_numpy(zero_copy_only=False)
    n = len(keys) * TURNS * len(CONTENT_DIMENSIONS)
    values = rng.random(n) * 5
    accepted = values.reshape(len(keys), -1).min(axis=1) >= 0.5
    return {
        "turn_scores": pa.table({
            "dialogue_key": np.repeat(keys, TURNS * len(CONTENT_DIMENSIONS)),
            "turn_index": np.tile(np.repeat(np.arange(TURNS), len(CONTENT_DIMENSIONS)), len(keys)).astype(np.int32),
            "dimension": np.tile(CONTENT_DIMENSIONS, len(keys) * TURNS), "value": values,
            "run_id": ["bench"] * n}),
        "decisions": pa.table({
            "dialogue_key": keys, "run_id": ["bench"] * len(keys), "accepted": accepted,
            "reason": np.where(accepted, "", "turn 1: image_quality 0.40 < 2.50"),
            "turns_accepted": pa.array([[bool(a)] * TURNS for a in accepted]), "decided_at": [now()] * len(keys)}),
    }


def _timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def synthetic_output(out: Path, dialogues: int, batch_size: int = 2_000,
                     rng: np.random.Generator | None = None) -> None:
    """A store shaped like a real run's at ``dialogues`` dialogues (the rows of bench/bench_provenance.py plus seeds,
    turns, final turn scores, decisions, a dedup pass and a version listing every dialogue), built into ``out``."""
    rng = rng or np.random.default_rng(0)
    spec = {"scoring": {"thresholds": THRESHOLDS}, "roles": {"llm": {"num_gpus": 1}, "judge": {"num_gpus": 1}}}
    with ProvenanceStore(out) as store:
        store.con.execute("INSERT INTO runs (run_id, kind, started_at, status, job_spec) VALUES "
                          "('bench', 'run', now(), 'finished', ?)", [json.dumps(spec)])
        store.con.execute("INSERT INTO models (model_key, run_id, role, backend, model_id) VALUES "
                          "('m1', 'bench', 'llm', 'vllm', 'Qwen/Qwen3-4B-Instruct-2507'), "
                          "('m2', 'bench', 'judge', 'vllm', 'Qwen/Qwen3-VL-8B-Instruct')")
        for first in range(0, dialogues, batch_size):
            tables = batch(rng, first, min(batch_size, dialogues - first), "bench")
            with store.transaction():
                for name, table in {**tables, **scored(rng, tables)}.items():
                    store.insert_arrow(name, table)
            print(f"\r{min(first + batch_size, dialogues)} dialogues stored", end="", flush=True)
        print()
        store.con.execute(f"""INSERT INTO seeds (seed_key, seed_id, source, text, run_id)
                              SELECT seed_key, 'seed-' || dialogue_id, 'seeds.jsonl',
                                     'Do you know ' || dialogue_id || '? Can you draw a picture of it for me?', 'bench'
                              FROM dialogues;
                              INSERT INTO turns (dialogue_key, turn_index, question, answer, caption, run_id)
                              SELECT dialogue_key, t, 'a synthetic question of about the length of a real one',
                                     'a synthetic answer, somewhat longer than the question it answers, as they are',
                                     'a caption', 'bench'
                              FROM dialogues, range({TURNS}) AS r(t)""")
        store.con.execute("""INSERT INTO dedup BY NAME
                             SELECT 'bench' AS run_id, dialogue_id AS dropped_id, 'dlg-0' AS kept_id,
                                    'dlg-0' AS matched_id, 'minhash' AS method, 0.9 AS similarity,
                                    now() AS created_at
                             FROM dialogues USING SAMPLE 1 PERCENT (bernoulli, 3)""")
        store.con.execute("INSERT INTO versions (version, run_id, created_at, job_key, engine_version, "
                          "n_dialogues, path, kind) VALUES (1, 'bench', now(), 'k', 'bench', ?, ?, 'run')",
                          [dialogues, str(out / "versions" / "v0001")])
        store.con.execute("""INSERT INTO version_dialogues SELECT 1, d.dialogue_id, d.dialogue_key,
                                    dc.accepted AND dd.dropped_id IS NULL
                             FROM dialogues d JOIN decisions dc USING (dialogue_key)
                             LEFT JOIN dedup dd ON dd.dropped_id = d.dialogue_id""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2_000, help="dialogues per transaction (as bench_provenance)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seir-bench-report-") as folder:
        out = Path(folder)
        synthetic_output(out, args.dialogues, args.batch)
        (out / "versions" / "v0001").mkdir(parents=True)
        with duckdb.connect(str(out / ProvenanceStore.FILENAME), read_only=True) as con:
            keys = [row[0] for row in con.execute("SELECT call_key FROM model_calls USING SAMPLE 64 ROWS").fetchall()]
        with ProvenanceStore(out) as store:
            held = min(_timed(lambda: store.answered(keys)) for _ in range(20))
            store.release_between_uses()
            unit = statistics.median(_timed(lambda: store.answered(keys)) for _ in range(20))
        with ProvenanceStore(out, read_only=True) as store:
            started = time.perf_counter()
            report = write_report(store.con, out, 1)
            took = time.perf_counter() - started
        size_mb = report.stat().st_size / 1e6
    print(f"writer unit (open, 64-key cache look-up, checkpoint, close): median {unit * 1000:.1f} ms against "
          f"{held * 1000:.1f} ms on a held connection")
    print(f"report at {args.dialogues} dialogues: {took:.1f}s, {size_mb:.1f} MB (target < 30 s: ratio "
          f"{took / 30:.2f} of the budget)")


if __name__ == "__main__":
    main()
