"""Issue 36 benchmark: ``seir view`` on a store of a real run's shape (bench/bench_report.py's ``synthetic_output``:
per dialogue 3 turns, 22 drafts, 88 score rows and 110 model calls, with final scores, decisions, a dedup pass and
a version). Over HTTP, as a browser asks: the first page of the list, a filtered and sorted page deep in the list,
and a dialogue page, each many times; the viewer's memory after a few requests and after all of them.

    python bench/bench_viewer.py --dialogues 1000000 --requests 100

Target: p95 under 300 ms for each page (the ratio printed is of that budget), the viewer's memory flat. Beside it,
the same filtered page answered straight from the store (aggregating final scores per request, as a viewer without
its list would): the list's speed-up. Then a shard is committed and the list's refresh timed: how long a viewer holds
the store (a running writer waits that long) per commit it takes in. With --keep the store is built once and kept
(each run adds that shard to it).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from bench_provenance import batch
from bench_report import scored, synthetic_output

from seir.engine.store import ProvenanceStore
from seir.engine.view import Viewer
from seir.engine.view.server import make_server

TARGET_S = 0.3
SHARD = 256
FILTERED = "/?status=rejected&min_image_quality=2&sort=image_quality&order=desc&page=40"
STRAIGHT = """
    WITH finals AS (SELECT ts.dialogue_key, ts.turn_index, ts.dimension, arg_max(ts.value, r.started_at) AS value
                    FROM turn_scores ts JOIN runs r USING (run_id) GROUP BY ALL),
    means AS (SELECT dialogue_key, avg(value) FILTER (WHERE dimension = 'image_quality') AS image_quality
              FROM finals GROUP BY ALL)
    SELECT d.dialogue_id, m.image_quality FROM dialogues d JOIN latest_decisions l USING (dialogue_key)
    JOIN means m USING (dialogue_key) WHERE NOT l.accepted AND m.image_quality >= 2
    ORDER BY m.image_quality DESC LIMIT 50 OFFSET 2000"""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url) as answer:
        answer.read()
    return time.perf_counter() - started


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return (f"{name:<16} median {statistics.median(times) * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  "
            f"(ratio of the 300 ms budget: {p95 / TARGET_S:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100, help="requests of each page")
    parser.add_argument("--keep", type=Path, default=None, help="build the store here and keep it (or reuse it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seir-bench-view-") as folder:
        out = args.keep or Path(folder)
        if not (out / ProvenanceStore.FILENAME).exists():
            started = time.perf_counter()
            synthetic_output(out, args.dialogues)
            print(f"store built in {time.perf_counter() - started:.0f} s")
        with duckdb.connect(str(out / ProvenanceStore.FILENAME), read_only=True) as con:
            keys = [k for (k,) in con.execute("SELECT dialogue_key FROM dialogues USING SAMPLE 200 ROWS").fetchall()]
            straight = [0.0] * 5
            for i in range(len(straight)):
                started = time.perf_counter()
                con.execute(STRAIGHT).fetchall()
                straight[i] = time.perf_counter() - started
        base = rss_mb()
        started = time.perf_counter()
        viewer = Viewer(out, annotator="bench")
        listed = time.perf_counter() - started
        server = make_server(viewer, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        address = f"http://127.0.0.1:{server.server_address[1]}"
        rng = random.Random(0)
        try:
            timed_get(address + "/")
            warm = rss_mb()
            first = [timed_get(address + "/") for _ in range(args.requests)]
            filtered = [timed_get(address + FILTERED) for _ in range(args.requests)]
            pages = [timed_get(f"{address}/dialogue/{rng.choice(keys)}") for _ in range(args.requests)]
            after = rss_mb()
            # A shard committed while the viewer is open: what its next refresh costs (the store is held meanwhile).
            with ProvenanceStore(out) as store, store.transaction():
                tables = batch(np.random.default_rng(1), args.dialogues + 10_000_000, SHARD, "bench")
                for name, table in {**tables, **scored(np.random.default_rng(2), tables)}.items():
                    store.insert_arrow(name, table)
            started = time.perf_counter()
            viewer.listing.refresh()
            refreshed = time.perf_counter() - started
        finally:
            server.shutdown()
            viewer.stop()
    print(f"{args.dialogues} dialogues; the viewer listed them in {listed:.1f} s at start")
    print(summary("first page", first))
    print(summary("filtered page", filtered))
    print(summary("dialogue page", pages))
    print(f"filtered page straight from the store: median {statistics.median(straight) * 1000:.0f} ms "
          f"({statistics.median(straight) / statistics.median(filtered):.0f}x the list's)")
    print(f"a shard of {SHARD} dialogues committed: the list took it in {refreshed * 1000:.0f} ms")
    print(f"viewer memory: {base:.0f} MB before, {warm:.0f} MB after its first page, {after:.0f} MB after "
          f"{3 * args.requests} more requests ({after - warm:+.0f} MB)")


if __name__ == "__main__":
    main()
