"""Seeds at real size: repeated ids are quarantined, near-duplicate drops are the exact pairwise rule whatever the
chunking, and planning holds the same memory for 2k seeds as for 40k."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import seir.engine.seeds.plan as seed_plan
from seir.engine.keys import normalize_words
from seir.engine.seeds import load_seeds
from seir.engine.spec import SeedSpec
from seir.operators.dedup.groups import resolve
from seir.operators.dedup.shingles import normalized_utf8, shingle_hashes
from tests.engine.conftest import TEMPLATES, job_dict, write_job

WORDS = ["red", "snow", "river", "leopard", "crane", "forest", "city", "coral", "storm", "night", "bamboo", "yak",
         "festival", "harbor", "seal", "durian", "fossil", "aurora", "meteor", "wetland"]


def templated_lines(count: int, seed: int = 7) -> list[dict[str, str]]:
    """InterSyn-style questions with planted near-duplicates (a changed punctuation, an added word)."""
    rng = random.Random(seed)
    lines: list[dict[str, str]] = []
    for i in range(count):
        if lines and rng.random() < 0.25:
            base = rng.choice(lines)["text"]
            text = base.replace("?", "!", 1) if rng.random() < 0.5 else f"{base} {rng.choice(WORDS)}"
        else:
            topic = " ".join(rng.choice(WORDS) for _ in range(3))
            text = rng.choice(TEMPLATES).replace("***", topic)
        lines.append({"id": f"s{i}", "text": text})
    return lines


def write_lines(path: Path, lines: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def pairwise_kept(texts: list[str], threshold: float) -> list[int]:
    """The positions the rule keeps, computed over every pair: equal normalised texts or shingle-set Jaccard at the
    threshold link two seeds; each connected group keeps its first."""
    folded = [normalized_utf8(normalize_words(text)) for text in texts]
    hashes = shingle_hashes(folded, seed_plan.SHINGLE_WORDS)
    sets = [set(hashes.values[hashes.offsets[i]:hashes.offsets[i + 1]].tolist()) for i in range(len(texts))]
    a, b = [], []
    for x, y in itertools.combinations(range(len(texts)), 2):
        union = len(sets[x] | sets[y])
        if folded[x] == folded[y] or (union and len(sets[x] & sets[y]) / union >= threshold):
            a.append(x)
            b.append(y)
    dropped = set(resolve(np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)).node.tolist())
    return [i for i in range(len(texts)) if i not in dropped]


def test_a_repeated_id_is_quarantined_and_never_makes_a_second_dialogue(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "seeds.jsonl", [
        {"id": "yak", "text": "How does a yak keep warm on the plateau? Draw one."},
        {"id": "crane", "text": "Where do red-crowned cranes spend the winter? Draw the marsh."},
        {"id": "yak", "text": "What does a yak eat in the snow? Please draw it grazing."}])
    load = load_seeds(SeedSpec(files=[path], near_duplicates=None))
    assert [s.seed_id for s in load.seeds] == ["yak", "crane"]
    assert [(q.line, q.field) for q in load.quarantined] == [(3, "id")]
    assert f"already used by the seed at {path}:1" in load.quarantined[0].reason


def test_near_duplicate_drops_are_the_pairwise_rule_however_lines_are_chunked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = templated_lines(300)
    path = write_lines(tmp_path / "seeds.jsonl", lines)
    expected = [lines[i]["id"] for i in pairwise_kept([line["text"] for line in lines], 0.8)]
    assert len(expected) < len(lines) * 0.85  # the planted copies are there to find
    kept = []
    for stage_rows, shingle_rows in ((8192, 16384), (7, 5)):
        monkeypatch.setattr(seed_plan, "STAGE_ROWS", stage_rows)
        monkeypatch.setattr(seed_plan, "_NEAR_DUPLICATE_ROWS", shingle_rows)
        kept.append([s.seed_id for s in load_seeds(SeedSpec(files=[path], near_duplicates=0.8)).seeds])
    assert kept[0] == kept[1] == expected


def test_seeds_with_other_pictures_are_never_near_duplicates(tmp_path: Path) -> None:
    from PIL import Image

    for name, colour in (("a.png", "red"), ("b.png", "blue")):
        Image.new("RGB", (8, 8), colour).save(tmp_path / name)
    path = write_lines(tmp_path / "seeds.jsonl", [
        {"id": "one", "text": "What is in this picture?", "images": ["a.png"]},
        {"id": "two", "text": "What is in this picture?", "images": ["b.png"]},
        {"id": "three", "text": "What is in this picture!", "images": ["a.png"]}])
    assert [s.seed_id for s in load_seeds(SeedSpec(files=[path])).seeds] == ["one", "two"]


# VmHWM, the process's own high-water mark: ru_maxrss of a child started by vfork + exec carries over the parent's.
PEAK = ("import sys\nfrom pathlib import Path\nfrom seir.engine.cli.main import main\n"
        "main(['refresh', sys.argv[1], '--out', sys.argv[2], '--dry-run'])\n"
        "print('PEAK_KB', next(line.split()[1] for line in Path('/proc/self/status').read_text().splitlines() "
        "if line.startswith('VmHWM')))")


def test_planning_memory_stays_flat_from_2k_to_40k_seeds(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """A fresh process per size (peak resident memory is a process's high-water mark), DuckDB's working memory
    capped at 64 MB. The seeds used to cost ~8 KB each in the driver: 38k more would add ~300 MB."""
    peaks, planned = [], []
    for count in (2000, 40000):
        folder = tmp_path / str(count)
        job = write_job(folder, job_dict("scale", topics=[], seeds={"topics": [], "templates": []}),
                        templated_lines(count, seed=count))
        done = subprocess.run([sys.executable, "-c", PEAK, str(job), str(folder / "out")], capture_output=True,
                              text=True, check=True, env={**os.environ, "SEIR_DUCKDB_MEMORY": "64MB"})
        peaks.append(int(done.stdout.split("PEAK_KB")[-1]) / 1024)
        planned.append(done.stderr)
    assert "reuse 0 committed dialogues" in planned[1]
    assert peaks[1] - peaks[0] < 64 + 40, peaks  # at most DuckDB's capped working memory, and some slack


def test_duckdb_out_of_memory_is_one_line_naming_the_step_and_the_setting(tiny_models: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """A memory cap too small for the seed file: one line that names the step and $SEIR_DUCKDB_MEMORY, no
    traceback, exit status 2."""
    job = write_job(tmp_path, job_dict("cramped", topics=[], seeds={"topics": [], "templates": []}),
                    templated_lines(20000, seed=3))
    done = subprocess.run([sys.executable, "-m", "seir.engine.cli", "refresh", str(job), "--out", str(tmp_path / "out"),
                           "--dry-run"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SEIR_DUCKDB_MEMORY": "4MB"})
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"seir: error: DuckDB ran out of its 4MB of working memory in '[a-z -]+': raise "
                        r"\$SEIR_DUCKDB_MEMORY \(e\.g\. SEIR_DUCKDB_MEMORY=2GB\) and run the same command again", last)
    assert "Traceback" not in done.stderr
