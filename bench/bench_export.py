"""Issue 13 benchmark: ``seir export --format hf`` throughput and peak memory, against ``datasets``' own writer.

A synthetic output folder is built the way a run leaves one: dialogues of three turns, each turn's assistant message
with a PNG under ``images/``, per-turn scores, one dataset version (rows go in through the store's Arrow inserts).
Then, each in a fresh process:

- seir: ``export(out, to, ExportOptions("hf"))``, rows streamed from DuckDB into save_to_disk's sharded Arrow layout;
- peer: the same rows (the same reader and row mapping, so both pay for DuckDB and the image reads) written by
  ``datasets.Dataset.from_generator(..., features=...)`` and then ``save_to_disk``, the usual way to make such a
  dataset with ``datasets``.

Both outputs are checked to hold the same rows. Throughput is dialogues/s and MB/s of written dataset files; peak
memory is the child's maximum resident set, measured at several sizes to show it stays flat in the number of
dialogues.

    python bench/bench_export.py --dialogues 1000 3000 10000 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from seir.engine.keys import bytes_key
from seir.engine.store import ImageStore, ProvenanceStore, now

TURNS = 3
IMAGE_POOL = 512  # distinct images the dialogues cycle through (disk space); every row still embeds its own bytes
IMAGE_SIDE = 128
BATCH = 2_000
TEXT = "A synthetic turn of about the length a real answer has, with a few clauses, facts and a closing sentence. "


def build(out: Path, dialogues: int, side: int = IMAGE_SIDE) -> None:
    """A provenance store with ``dialogues`` accepted dialogues in version 1 and their images."""
    rng = np.random.default_rng(0)
    images = ImageStore(out)
    keys = []
    for _ in range(IMAGE_POOL):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
        keys.append(images.put(buffer.getvalue()))
    stamp = now()
    with ProvenanceStore(out) as store:
        store.con.execute("INSERT INTO runs (run_id, kind, job_name, job_key, started_at, status) VALUES "
                          "('bench', 'run', 'bench', 'job', ?, 'finished')", [stamp])
        store.con.execute("INSERT INTO versions (version, run_id, created_at, job_key, engine_version, n_dialogues, "
                          "path, kind) VALUES (1, 'bench', ?, 'job', 'bench', ?, '', 'run')", [stamp, dialogues])
        for first in range(0, dialogues, BATCH):
            count = min(BATCH, dialogues - first)
            ids = [f"dlg-{i:07d}" for i in range(first, first + count)]
            dialogue_keys = [bytes_key(i.encode()) for i in ids]
            messages = []
            for i in range(first, first + count):
                turns = []
                for t in range(TURNS):
                    key = keys[(i * TURNS + t) % IMAGE_POOL]
                    turns += [{"role": "user", "content": [{"type": "text", "text": f"Question {t} of {i}?"}]},
                              {"role": "assistant", "content": [{"type": "text", "text": TEXT * 3},
                                                                {"type": "image", "image": images.relative_path(key)}]}]
                messages.append(json.dumps(turns))
            with store.transaction():
                store.insert_arrow("dialogues", pa.table({
                    "dialogue_key": dialogue_keys, "dialogue_id": ids, "seed_key": ["s"] * count,
                    "generation_key": ["g"] * count, "run_id": ["bench"] * count, "shard_id": ["s"] * count,
                    "n_turns": [TURNS] * count, "failure": [""] * count, "messages": messages,
                    "created_at": [stamp] * count}))
                store.insert_arrow("version_dialogues", pa.table({
                    "version": [1] * count, "dialogue_id": ids, "dialogue_key": dialogue_keys,
                    "accepted": [True] * count}))
                n = count * TURNS * 4
                store.insert_arrow("turn_scores", pa.table({
                    "dialogue_key": np.repeat(dialogue_keys, TURNS * 4),
                    "turn_index": np.tile(np.repeat(np.arange(TURNS, dtype=np.int32), 4), count),
                    "dimension": np.tile(["text_content", "image_content", "image_quality", "image_text_synergy"],
                                         count * TURNS),
                    "value": rng.random(n) * 5, "run_id": ["bench"] * n}))


def child(which: str, out: Path, to: Path) -> None:
    """One export in this process; prints seconds, rows and peak resident memory as JSON."""
    started = time.perf_counter()
    if which == "seir":
        from seir.engine.export import ExportOptions, export

        export(out, to, ExportOptions("hf"), stream=io.StringIO())
    else:
        from datasets import Dataset, DatasetDict

        from seir.engine.export import FORMATS
        from seir.engine.export.formats import hf_dialogue
        from seir.engine.export.rows import dialogue_rows
        from seir.engine.store import open_read_only

        def rows() -> object:
            con = open_read_only(out)
            try:
                for row in dialogue_rows(con, out, 1):
                    yield hf_dialogue(row)
            finally:
                con.close()

        features = FORMATS["hf"].tables["default"]  # type: ignore[index]
        train = Dataset.from_generator(rows, features=features, cache_dir=str(to.parent / f"{to.name}-cache"))
        DatasetDict({"train": train}).save_to_disk(str(to))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_mb": peak_resident_mb()}))


def peak_resident_mb() -> float:
    """This process's peak resident memory: VmHWM, which belongs to the process's own address space. getrusage's
    ru_maxrss would not do: Linux carries the parent's high-water mark into a child started by vfork + exec, so a
    child of a parent that has just built a large store would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dataset_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.arrow"))


def run_child(which: str, out: Path, to: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", which, "--out", str(out), "--to", str(to)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{which} export failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def same_rows(a: Path, b: Path) -> bool:
    from datasets import load_from_disk

    left, right = load_from_disk(str(a))["train"], load_from_disk(str(b))["train"]
    if left.num_rows != right.num_rows:
        return False
    picks = sorted({0, left.num_rows // 2, left.num_rows - 1})
    return all(left.with_format("arrow")[i:i + 1].equals(right.with_format("arrow")[i:i + 1]) for i in picks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=int, nargs="+", default=[1_000, 3_000, 10_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-side", type=int, default=IMAGE_SIDE, help="pixels of the square noise PNGs")
    parser.add_argument("--no-peer", action="store_true", help="seir alone (memory at sizes the peer is slow at)")
    parser.add_argument("--child", choices=("seir", "peer"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--to", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.out, args.to)
        return
    print(f"images {args.image_side}x{args.image_side}, {TURNS} per dialogue", flush=True)
    print("| dialogues | dataset MB | seir dialogues/s | seir MB/s | seir peak MB | peer dialogues/s | peer MB/s | "
          "peer peak MB | speed ratio (seir / peer) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    for n in args.dialogues:
        with tempfile.TemporaryDirectory(prefix="seir-bench-export-") as folder:
            out = Path(folder) / "out"
            build(out, n, args.image_side)
            whom = ("seir",) if args.no_peer else ("seir", "peer")
            results: dict[str, list[dict[str, float]]] = {w: [] for w in whom}
            size = 0
            for repeat in range(args.repeats):
                for which in whom:  # alternating, so load drifts hit both alike
                    to = Path(folder) / f"{which}-{repeat}"
                    results[which].append(run_child(which, out, to))
                    size = dataset_bytes(to)
                if repeat == 0 and not args.no_peer and not same_rows(Path(folder) / "seir-0", Path(folder) / "peer-0"):
                    raise SystemExit("seir's and the peer's exports differ")
                for which in whom:
                    shutil.rmtree(Path(folder) / f"{which}-{repeat}", ignore_errors=True)
                    shutil.rmtree(Path(folder) / f"{which}-{repeat}-cache", ignore_errors=True)
            median = {w: statistics.median(r["seconds"] for r in rs) for w, rs in results.items()}
            peak = {w: max(r["peak_mb"] for r in rs) for w, rs in results.items()}
            mb = size / 1e6
            if args.no_peer:
                print(f"| {n} | {mb:.0f} | {n / median['seir']:.0f} | {mb / median['seir']:.0f} | {peak['seir']:.0f} "
                      "| - | - | - | - |", flush=True)
                continue
            print(f"| {n} | {mb:.0f} | {n / median['seir']:.0f} | {mb / median['seir']:.0f} | {peak['seir']:.0f} | "
                  f"{n / median['peer']:.0f} | {mb / median['peer']:.0f} | {peak['peer']:.0f} | "
                  f"{median['peer'] / median['seir']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
