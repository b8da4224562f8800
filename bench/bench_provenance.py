"""Issue 5 benchmark, provenance side: ingest rate and lineage latency on ~10 million synthetic provenance rows.

Rows are shaped like a real run's (per dialogue: 3 turns x 3 stages x ~2.5 rounds of drafts, ~4 score rows and
~5 model calls per draft) and go in through the same path a shard commit uses (Arrow batches, INSERT BY NAME, one
transaction per batch). Then ``seir lineage`` (the function behind the command: open read-only, gather the tree) is
timed on random dialogues.

    python bench/bench_provenance.py --dialogues 45000 --lookups 25

Targets: ingest over 1M rows/s; lineage under 200 ms (median).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from seir.engine.query import lineage
from seir.engine.store import ProvenanceStore, now

STAGES = np.array(["question", "answer", "image"])
DRAFTS_PER_DIALOGUE = 22
SCORES_PER_DRAFT = 4
CALLS_PER_DRAFT = 5


def hex_keys(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64).view(np.uint64)
    return np.char.add(np.char.mod("%016x", raw[:, 0]), np.char.mod("%016x", raw[:, 1]))


def batch(rng: np.random.Generator, first: int, count: int, run_id: str) -> dict[str, pa.Table]:
    """Synthetic rows for dialogues [first, first + count)."""
    dialogue_keys = hex_keys(rng, count)
    dialogue_ids = np.char.add("dlg-", np.arange(first, first + count).astype(str))
    n_drafts = count * DRAFTS_PER_DIALOGUE
    draft_keys = hex_keys(rng, n_drafts)
    owner = np.repeat(dialogue_keys, DRAFTS_PER_DIALOGUE)
    call_keys = hex_keys(rng, n_drafts * CALLS_PER_DRAFT).reshape(n_drafts, CALLS_PER_DRAFT)
    stamp = now()
    return {
        "dialogues": pa.table({
            "dialogue_key": dialogue_keys, "dialogue_id": dialogue_ids, "seed_key": hex_keys(rng, count),
            "generation_key": ["g" * 32] * count, "run_id": [run_id] * count, "shard_id": ["s"] * count,
            "n_turns": np.full(count, 3, np.int32), "failure": [""] * count, "messages": ["[]"] * count,
            "created_at": [stamp] * count}),
        "drafts": pa.table({
            "draft_key": draft_keys, "dialogue_key": owner,
            "turn_index": np.tile(np.arange(DRAFTS_PER_DIALOGUE) % 3, count).astype(np.int32),
            "stage": STAGES[np.tile(np.arange(DRAFTS_PER_DIALOGUE) // 8 % 3, count)],
            "round": np.tile(np.arange(DRAFTS_PER_DIALOGUE) % 3, count).astype(np.int32),
            "text": ["a synthetic draft of about the length of a real question"] * n_drafts,
            "ok": np.ones(n_drafts, bool), "reason": [""] * n_drafts, "critique": ["fine; none"] * n_drafts,
            "passed": rng.random(n_drafts) < 0.3, "best": rng.random(n_drafts) < 0.4,
            "call_keys": pa.FixedSizeListArray.from_arrays(pa.array(call_keys.ravel()), CALLS_PER_DRAFT).cast(
                pa.list_(pa.string())),
            "run_id": [run_id] * n_drafts}),
        "scores": pa.table({
            "draft_key": np.repeat(draft_keys, SCORES_PER_DRAFT), "dialogue_key": np.repeat(owner, SCORES_PER_DRAFT),
            "dimension": np.tile(["text_content", "image_content", "image_quality", "image_text_synergy"], n_drafts),
            "scorer": np.tile(["combined", "judge", "clip", "image-quality"], n_drafts),
            "value": rng.random(n_drafts * SCORES_PER_DRAFT) * 5, "model_id": ["judge-model"] * (4 * n_drafts),
            "raw": ["{}"] * (4 * n_drafts), "run_id": [run_id] * (4 * n_drafts)}),
        "model_calls": pa.table({
            "call_key": call_keys.ravel(), "run_id": [run_id] * call_keys.size, "shard_id": ["s"] * call_keys.size,
            "role": np.tile(["llm", "judge", "judge", "image", "clip"], n_drafts),
            "method": np.tile(["chat", "chat", "score", "render", "similarity"], n_drafts),
            "model_id": ["m"] * call_keys.size, "revision": ["r"] * call_keys.size,
            "tokens_in": rng.integers(50, 900, call_keys.size, dtype=np.int32),
            "tokens_out": rng.integers(0, 200, call_keys.size, dtype=np.int32),
            "latency_ms": rng.random(call_keys.size) * 400, "batch_id": ["b"] * call_keys.size,
            "batch_size": np.full(call_keys.size, 16, np.int32), "cached": np.zeros(call_keys.size, bool),
            "error": pa.nulls(call_keys.size, pa.string()), "created_at": [stamp] * call_keys.size}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=int, default=45_000)
    parser.add_argument("--batch", type=int, default=2_000, help="dialogues per transaction")
    parser.add_argument("--lookups", type=int, default=25)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="seir-bench-prov-") as folder:
        out = Path(folder)
        rows = ingest_s = 0.0
        with ProvenanceStore(out) as store:
            store.con.execute("INSERT INTO runs (run_id, kind, started_at, status) VALUES ('bench', 'run', now(), "
                              "'finished')")
            for first in range(0, args.dialogues, args.batch):
                tables = batch(rng, first, min(args.batch, args.dialogues - first), "bench")
                started = time.perf_counter()
                with store.transaction():
                    for name, table in tables.items():
                        store.insert_arrow(name, table)
                ingest_s += time.perf_counter() - started
                rows += sum(t.num_rows for t in tables.values())
                print(f"\r{rows / 1e6:.1f}M rows ingested", end="", flush=True)
        print()
        size_gb = (out / ProvenanceStore.FILENAME).stat().st_size / 1e9
        ids = [f"dlg-{i}" for i in rng.integers(0, args.dialogues, args.lookups)]
        timings = []
        for dialogue in ids:
            started = time.perf_counter()
            tree = lineage(out, dialogue)
            timings.append(time.perf_counter() - started)
            assert len(tree["drafts"]) == DRAFTS_PER_DIALOGUE
    rate = rows / ingest_s
    median_ms = statistics.median(timings) * 1000
    print(f"rows: {rows / 1e6:.2f}M in {args.dialogues} dialogues, database {size_gb:.2f} GB")
    print(f"ingest: {rate / 1e6:.2f}M rows/s (target > 1M rows/s: ratio {rate / 1e6:.2f})")
    print(f"lineage: median {median_ms:.0f} ms, p90 {np.percentile(timings, 90) * 1000:.0f} ms over {len(ids)} "
          f"lookups (target < 200 ms: ratio {median_ms / 200:.2f} of the budget)")


if __name__ == "__main__":
    main()
