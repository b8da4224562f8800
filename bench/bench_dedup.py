"""Near-duplicate text dedup: seir's MinHash pass against datasketch, measured in the same run.

On N synthetic dialogues of ~200 words with ~10% planted near-duplicates (exact copies and copies with 0-5% of the
words replaced), it measures
  (a) signature throughput, text to signature, per core: ``MinHashDedup.sketch`` against normalising, shingling and
      ``datasketch.MinHash.bulk`` with an xxhash hashfunc, both with 128 permutations;
  (b) the whole near-duplicate pass (signatures, LSH, verification, components): ``find_duplicates`` with MinHash
      alone (DuckDB held to one thread; Jaccard >= 0.8 by the estimate, or exactly from the stored shingle-hash
      sets where the estimate is within 3 sds of 0.8) against ``datasketch.MinHashLSH`` insert and query, verified
      by estimated Jaccard >= 0.8 (its only check) and grouped the same way; datasketch runs with its default bands
      and with ours;
  (c) the peak memory of each (resident set high-water mark, reset before the step, in a forked child);
  (d) recall and precision against true Jaccard >= 0.8. Truth: every pair inside a planted family, plus every pair
      either system linked, whose shingle sets have Jaccard >= 0.8 (pairs nobody linked outside the families are
      unrelated texts, J ~ 0.05). Recall: share of true pairs put in one group; precision: share of links that are
      true pairs.
Each step runs in a fresh fork of the process that built the corpus, repeats interleaved; medians are reported.
Time is the process's CPU time (one thread: numpy's element-wise work is single-threaded and DuckDB is held to
one), so docs/s is per core and other load on the machine barely moves it; wall time is printed beside it.

    .venv/bin/python bench/bench_dedup.py --n 100000
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import xxhash
from corpora import TextCorpus, TextMaker, jaccard, shingle_set  # bench/corpora.py, beside this script
from datasketch import MinHash, MinHashLSH

from seir.engine.dedup import DedupItem, find_duplicates
from seir.engine.spec import DedupConfig
from seir.operators.dedup import MinHashDedup
from seir.operators.dedup.groups import components
from seir.operators.dedup.shingles import normalize

Pairs = set[tuple[int, int]]
Outcome = tuple[list[list[int]], Pairs]  # groups and links of a pass; empty for a signatures-only step


@dataclass(frozen=True)
class Measured:
    cpu: list[float]  # CPU seconds of each repeat: what "per core" means, and robust to load from other processes
    wall: list[float]
    peak_mb: float
    groups: list[list[int]]
    links: Pairs


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _child(step: Callable[[], Any], pipe: Any) -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the high-water mark: measure this step only
    start_kb = _status_kb("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    groups, links = step()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    pipe.send((cpu, wall, (_status_kb("VmHWM") - start_kb) / 1024, groups, links))


Run = tuple[float, float, float, list[list[int]], Pairs]  # CPU s, wall s, peak MB, groups, links


def run_once(step: Callable[[], Outcome]) -> Run:
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(step, send))
    child.start()
    outcome = receive.recv()
    child.join()
    return outcome


def measure_all(steps: dict[str, tuple[Callable[[], Outcome], int]]) -> dict[str, Measured]:
    """Repeats interleaved across the steps, so that load from elsewhere on the machine hits all of them alike."""
    runs: dict[str, list[Run]] = {name: [] for name in steps}
    for repeat in range(max(repeats for _, repeats in steps.values())):
        for name, (step, repeats) in steps.items():
            if repeat < repeats:
                runs[name].append(run_once(step))
                print(f"  {name}: {runs[name][-1][0]:.2f} s CPU, {runs[name][-1][1]:.2f} s wall", flush=True)
    return {name: Measured([r[0] for r in done], [r[1] for r in done], max(r[2] for r in done), done[-1][3],
                           done[-1][4]) for name, done in runs.items()}


# ---- the systems ---------------------------------------------------------------------------------------------------

def signatures_only(sketch: Callable[[list[str]], object], texts: list[str]) -> Outcome:
    sketch(texts)
    return [], set()


def ours_pass(items: list[DedupItem]) -> Outcome:
    """From the pass's input records, as datasketch's pass starts from its input texts (both built beforehand)."""
    con = duckdb.connect(config={"threads": 1})  # per core, like datasketch
    result = find_duplicates(items, DedupConfig(methods=("minhash",)), con)
    return [[int(i) for i in group] for group in result.groups], {
        tuple(sorted((int(link.a_id), int(link.b_id)))) for link in result.links}


def _datasketch_shingles(text: str) -> list[bytes]:
    words = normalize(text).split(" ")
    return [" ".join(words[i:i + 3]).encode() for i in range(len(words) - 2)]


def datasketch_signatures(texts: list[str]) -> list[MinHash]:
    # datasketch 2.0 changed its default hash: pass one explicitly (32-bit, as its default affine32 scheme wants).
    return MinHash.bulk((_datasketch_shingles(t) for t in texts), num_perm=128, hashfunc=xxhash.xxh32_intdigest)


def datasketch_pass(texts: list[str], params: tuple[int, int] | None) -> Outcome:
    signatures = datasketch_signatures(texts)
    lsh = MinHashLSH(threshold=0.8, num_perm=128, params=params)
    with lsh.insertion_session() as session:
        for i, signature in enumerate(signatures):
            session.insert(i, signature)
    links = {(min(i, j), max(i, j)) for i, signature in enumerate(signatures) for j in lsh.query(signature)
             if i != j and signature.jaccard(signatures[j]) >= 0.8}
    return _groups(links), links


def _groups(links: Pairs) -> list[list[int]]:
    roots = components(np.array([a for a, _ in links], dtype=np.int64), np.array([b for _, b in links], dtype=np.int64))
    members: dict[int, list[int]] = {}
    for node, root in roots.items():
        members.setdefault(root, []).append(node)
    return list(members.values())


# ---- corpus and truth ----------------------------------------------------------------------------------------------

def make_corpus(n: int, seed: int) -> TextCorpus:
    copies = round(0.1 * n)
    return TextMaker(seed=seed, vocabulary_size=20000).corpus(
        originals=n - copies, copies={"exact": copies // 5, "edit 0-0.05": copies - copies // 5}, words=200)


def truth_pairs(corpus: TextCorpus, found: list[Pairs]) -> tuple[Pairs, dict[tuple[int, int], float]]:
    families: dict[int, list[int]] = {}
    for i, source in enumerate(corpus.source):
        families.setdefault(i if source < 0 else source, []).append(i)
    candidates = {pair for family in families.values() for pair in itertools.combinations(sorted(family), 2)}
    candidates |= set().union(*found)
    sets: dict[int, set[str]] = {}

    def shingles(i: int) -> set[str]:
        if i not in sets:
            sets[i] = shingle_set(corpus.texts[i])
        return sets[i]

    similarity = {pair: jaccard(shingles(pair[0]), shingles(pair[1])) for pair in candidates}
    return {pair for pair, j in similarity.items() if j >= 0.8}, similarity


def quality(measured: Measured, truth: Pairs) -> tuple[float, float]:
    grouped = {pair for group in measured.groups for pair in itertools.combinations(sorted(group), 2)}
    return len(grouped & truth) / len(truth), len(measured.links & truth) / max(len(measured.links), 1)


# ---- main ----------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="dialogues (default 100000)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each of our steps (median reported)")
    parser.add_argument("--peer-repeats", type=int, default=None, help="repeats of datasketch (default: 3 below "
                        "30000 dialogues, else 1: it takes minutes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    peer_repeats = args.peer_repeats or (3 if args.n < 30_000 else 1)

    began = time.perf_counter()
    corpus = make_corpus(args.n, args.seed)
    texts = corpus.texts
    print(f"corpus: {len(texts)} dialogues, {statistics.mean(len(t.split()) for t in texts[:1000]):.0f} words "
          f"on average, {sum(s >= 0 for s in corpus.source)} planted copies ({time.perf_counter() - began:.0f} s)")
    items = [DedupItem(str(i), text, order=i) for i, text in enumerate(texts)]
    bands = MinHashDedup().bands
    steps = {
        "signatures: seir": (lambda: signatures_only(MinHashDedup().sketch, texts), args.repeats),
        "signatures: datasketch": (lambda: signatures_only(datasketch_signatures, texts), peer_repeats),
        "pass: seir": (lambda: ours_pass(items), args.repeats),
        "pass: datasketch, default bands": (lambda: datasketch_pass(texts, None), peer_repeats),
        f"pass: datasketch, bands {bands}": (lambda: datasketch_pass(texts, bands), peer_repeats),
    }
    results = measure_all(steps)

    passes = [name for name in results if name.startswith("pass")]
    truth, _ = truth_pairs(corpus, [results[name].links for name in passes])
    print(f"\n{len(truth)} true pairs (Jaccard >= 0.8); n={args.n}; repeats: seir {args.repeats}, datasketch "
          f"{peer_repeats}\n")
    print("| step | CPU s, median (min) | wall s, median | docs/s per core | peak MB | recall | precision | "
          "CPU time / seir's, median (min) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, measured in results.items():
        ours = results[name.split(":")[0] + ": seir"].cpu
        median, fastest = statistics.median(measured.cpu), min(measured.cpu)
        scores = "{:.3f} | {:.3f}".format(*quality(measured, truth)) if name in passes else "- | -"
        print(f"| {name} | {median:.2f} ({fastest:.2f}) | {statistics.median(measured.wall):.2f} | "
              f"{len(texts) / median:,.0f} | {measured.peak_mb:,.0f} | {scores} | "
              f"{median / statistics.median(ours):.2f}x ({fastest / min(ours):.2f}x) |")

if __name__ == "__main__":
    main()
