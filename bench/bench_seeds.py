"""Real-size seed sets: planning time and the driver's peak memory from 10k to 1M seeds, and the dedup pass at 100k
and 1M dialogues, each against its own smallest size measured in the same run (the ideal: time per item flat,
memory flat).

Seeds are InterSyn-style questions: InterSyn's own question templates (``../shared/data`` when present, else a
built-in few) with synthetic topics of three words, one line per seed with an id. ``--dup`` plants near-duplicates:
that share of lines copies an earlier line with its punctuation and case changed or one word added.

- **plan**: what ``seir run`` does before any model loads: read and validate the seed file, quarantine repeats,
  drop near-duplicates, key and plan every dialogue, print the plan with its forecast, and record the run (seeds,
  plan and shards) in provenance. Time and the process's peak resident memory (VmHWM), in a fresh process
  per size; the baseline is the same process's resident memory after its imports.
- **dedup**: the dedup pass (``dedup_accepted``: exact text, MinHash) over N accepted dialogues of ~100 words with
  10% planted near-duplicates, in a store built beforehand by another process.

    .venv/bin/python bench/bench_seeds.py --seeds 10000 100000 1000000 --dialogues 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from corpora import vocabulary  # bench/corpora.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT.parent / "shared" / "data" / "intersyn" / "question_templates.json"
FALLBACK_TEMPLATES = ["Do you know ***? Can you draw a picture of it for me?",
                      "What does *** look like? Can you draw a sketch of it for me?",
                      "Can you describe the scene of ***? Then draw an image of it."]


def write_seeds(path: Path, count: int, duplicates: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = vocabulary(20000, seed)
    templates = json.loads(TEMPLATES.read_text()) if TEMPLATES.exists() else FALLBACK_TEMPLATES
    templates = [t for t in templates if "***" in t]  # a few of InterSyn's have no topic slot
    texts: list[str] = []
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            if texts and rng.random() < duplicates:
                base = texts[rng.randrange(len(texts))]
                text = base.upper().replace("?", " ?!") if rng.random() < 0.5 else base + " " + rng.choice(words)
            else:
                topic = " ".join(rng.choice(words) for _ in range(3))
                text = rng.choice(templates).replace("***", topic)
                if len(texts) < 100_000:  # a bounded pool of originals to copy from
                    texts.append(text)
            out.write(json.dumps({"id": f"s{i}", "text": text}) + "\n")


def write_job(folder: Path, seeds: Path) -> Path:
    job = yaml.safe_load((ROOT / "jobs" / "demo.yaml").read_text())
    job["seeds"] = {"files": [str(seeds)]}
    job["name"] = "bench-seeds"
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _status_mb(field: str) -> float:
    """A field of /proc/self/status in MB. VmHWM is this process's own high-water mark (``ru_maxrss`` of a child
    started by vfork + exec carries over its parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def child_plan(job: str, out: str) -> None:
    """Plan and record a run of ``job`` into ``out``, as ``seir run`` does before any model loads."""
    import io

    from seir.engine.run import Runner
    from seir.engine.seeds import image_key_only
    from seir.engine.spec import load_job

    runner = Runner(load_job(Path(job)), Path(out), stream=io.StringIO())
    baseline = _status_mb("VmRSS")
    started = time.perf_counter()
    with runner._session() as store:
        plan = runner._plan(store, image_key_only, show=True)
        runner._begin(store, "run", plan, "SELECT * FROM plan_dialogues")
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_mb": _status_mb("VmHWM"),
                      "baseline_mb": baseline, "planned": plan.dialogues}))


def child_build_store(out: str, count: int) -> None:
    """A store holding ``count`` accepted dialogues of two turns (~100 words), 10% near-duplicates of others."""
    import pyarrow as pa

    from seir.engine.store import ProvenanceStore, now

    rng = np.random.default_rng(0)
    words = np.array(vocabulary(20000, 1))
    run_id = "bench-run"
    with ProvenanceStore(Path(out)) as store, store.held():
        store.con.execute("INSERT INTO runs BY NAME SELECT ? AS run_id, 'run' AS kind, ? AS started_at, "
                          "'running' AS status", [run_id, now()])
        step = 50_000
        originals: list[str] = []
        for start in range(0, count, step):
            n = min(step, count - start)
            picks = rng.integers(0, len(words), size=(n, 50))
            texts = [" ".join(row) for row in words[picks].tolist()]
            for i in np.flatnonzero(rng.random(n) < 0.1).tolist():
                if originals:  # a copy of an earlier dialogue with ~2 words of 50 replaced
                    copied = originals[rng.integers(len(originals))].split()
                    for j in rng.integers(0, len(copied), size=2).tolist():
                        copied[j] = str(words[rng.integers(len(words))])
                    texts[i] = " ".join(copied)
            originals = (originals + texts[:1000])[-20000:]
            keys = [f"k{start + i:09d}" for i in range(n)]
            stamp = now()
            store.insert_arrow("dialogues", pa.table({
                "dialogue_key": keys, "dialogue_id": [f"d{start + i:09d}" for i in range(n)],
                "seed_key": keys, "run_id": [run_id] * n, "n_turns": [2] * n, "failure": [""] * n,
                "messages": ["[]"] * n, "created_at": [stamp] * n}))
            store.insert_arrow("turns", pa.table({
                "dialogue_key": keys * 2, "turn_index": [0] * n + [1] * n,
                "question": [t[:60] for t in texts] * 2, "answer": texts + [t[::-1] for t in texts],
                "caption": [""] * (2 * n), "run_id": [run_id] * (2 * n)}))
            store.insert_arrow("turn_scores", pa.table({
                "dialogue_key": keys, "turn_index": [0] * n, "dimension": ["text_content"] * n,
                "value": rng.uniform(1, 5, n), "run_id": [run_id] * n}))
            store.insert_arrow("decisions", pa.table({
                "dialogue_key": keys, "run_id": [run_id] * n, "accepted": [True] * n, "reason": [""] * n,
                "turns_accepted": [[True, True]] * n, "decided_at": [stamp] * n}))
            store.insert_arrow("run_dialogues", pa.table({
                "run_id": [run_id] * n, "n": list(range(start, start + n)), "dialogue_key": keys,
                "dialogue_id": [f"d{start + i:09d}" for i in range(n)], "seed_key": keys, "turns": [2] * n}))
    print(json.dumps({"built": count}))


def child_dedup(out: str) -> None:
    import io

    from seir.engine.dedup import dedup_accepted
    from seir.engine.spec import DedupConfig
    from seir.engine.store import ImageStore, ProvenanceStore

    config = DedupConfig(methods=("exact-text", "minhash"))
    baseline = _status_mb("VmRSS")
    started = time.perf_counter()
    with ProvenanceStore(Path(out)) as store:
        store.release_between_uses()
        dedup_accepted(store, config, "", ImageStore(Path(out)), "bench-run", io.StringIO())
    seconds = time.perf_counter() - started
    with ProvenanceStore(Path(out), read_only=True) as store:
        dropped = store.con.execute("SELECT count(*) FROM dedup WHERE run_id = 'bench-run'").fetchall()[0][0]
    print(json.dumps({"seconds": seconds, "peak_mb": _status_mb("VmHWM"),
                      "baseline_mb": baseline, "dropped": dropped}))


def _child(*args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(title: str, unit: str, rows: list[tuple[int, list[dict[str, float]]]]) -> None:
    first_rate = first_peak = None
    print(f"\n{title}\n| {unit} | median s | us per {unit[:-1]} | x per-item time vs smallest | peak MB | "
          "baseline MB | x peak vs smallest |\n|---:|---:|---:|---:|---:|---:|---:|")
    for size, runs in rows:
        seconds = statistics.median(r["seconds"] for r in runs)
        peak = statistics.median(r["peak_mb"] for r in runs)
        baseline = statistics.median(r["baseline_mb"] for r in runs)
        rate = seconds / size * 1e6
        first_rate, first_peak = first_rate or rate, first_peak or peak
        print(f"| {size:,} | {seconds:.1f} | {rate:.1f} | {rate / first_rate:.2f} | {peak:.0f} | {baseline:.0f} | "
              f"{peak / first_peak:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dup", type=float, nargs="*", default=[0.0, 0.2], help="shares of planted near-duplicates")
    parser.add_argument("--dialogues", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        {"plan": child_plan, "build": lambda out, n: child_build_store(out, int(n)), "dedup": child_dedup}[kind](*rest)
        return
    with tempfile.TemporaryDirectory(prefix="seir-bench-seeds-") as scratch:
        folder = Path(scratch)
        for dup in args.dup:
            rows = []
            for size in args.seeds:
                seeds = folder / f"seeds-{size}-{dup}.jsonl"
                write_seeds(seeds, size, dup)
                job = write_job(folder, seeds)
                runs = []
                for repeat in range(args.repeats):
                    runs.append(_child("plan", str(job), str(folder / f"out-{size}-{dup}-{repeat}")))
                    print(f"  plan {size:,} seeds, {dup:.0%} near-duplicates: {runs[-1]}", file=sys.stderr)
                rows.append((size, runs))
                seeds.unlink()
            _table(f"Plan and record a run, {dup:.0%} planted near-duplicates", "seeds", rows)
        rows = []
        for size in args.dialogues:
            out = folder / f"dedup-{size}"
            _child("build", str(out), str(size))
            runs = []
            for _ in range(args.repeats):
                runs.append(_child("dedup", str(out)))
                print(f"  dedup {size:,} dialogues: {runs[-1]}", file=sys.stderr)
            rows.append((size, runs))
        _table("The dedup pass (exact text, MinHash) over accepted dialogues, 10% planted near-duplicates",
               "dialogues", rows)


if __name__ == "__main__":
    main()
