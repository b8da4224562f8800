"""`seir check` names what is wrong in an output; `seir backup` and `seir restore` bring a store back whole;
``execution.snapshots`` keeps the newest K."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import duckdb
import yaml

from seir.engine.keys import file_key
from seir.engine.store import SharedCallCache
from seir.engine.store.snapshots import snapshot_problems
from tests.engine.conftest import FinishedRun, run_job
from tests.engine.run.test_resume import kill_group, seir_run, wait_for
from tests.engine.store.conftest import seir


def every_table(store: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(store), read_only=True) as con:
        tables = [row[0] for row in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        return {table: con.execute(f'SELECT * FROM "{table}" ORDER BY ALL').fetchall() for table in tables}


def test_check_passes_a_whole_output_and_names_each_problem(output: Path) -> None:
    whole = seir("check", "--out", str(output))
    assert whole.returncode == 0 and whole.stdout.rstrip().endswith("check: OK"), whole.stdout + whole.stderr
    assert re.search(r"images: ([1-9]\d*) of \1 present and hashing to their keys", whole.stdout), whole.stdout
    image = sorted((output / "images").glob("*/*.png"))[0]
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01  # one changed byte: still a file, no longer the picture its key names
    image.write_bytes(bytes(data))
    (output / "versions" / "v0001" / "rejected.parquet").unlink()
    broken = seir("check", "--out", str(output))
    assert broken.returncode == 1
    assert "check: 2 problems" in broken.stdout
    assert f"{image}: its content hashes to {file_key(image)}, not its key" in broken.stdout
    assert f"{output / 'versions' / 'v0001' / 'rejected.parquet'}: missing" in broken.stdout


def test_check_reads_a_call_cache_and_names_a_damaged_render(output: Path, tmp_path: Path) -> None:
    cache = SharedCallCache(tmp_path / "cache")
    picture = sorted((output / "images").glob("*/*.png"))[0]
    key = cache.images.put(picture.read_bytes())
    cache.con.execute("INSERT INTO call_outputs VALUES ('k', 'image', 'render', 'm', ?, 'r', 'o', 0)",
                      [json.dumps({"image_key": key, "width": 32, "height": 32})])
    cache.close()
    whole = seir("check", "--out", str(output), "--cache", str(tmp_path / "cache"))
    assert whole.returncode == 0 and "1 answers readable, 1 of 1 rendered images whole" in whole.stdout, whole.stdout
    cache.images.path(key).unlink()
    broken = seir("check", "--out", str(output), "--cache", str(tmp_path / "cache"))
    assert broken.returncode == 1 and f"{cache.images.path(key)}: missing" in broken.stdout, broken.stdout


def test_backup_then_restore_gives_back_every_table(job: Path, output: Path, tmp_path: Path) -> None:
    store = output / "provenance.duckdb"
    original = every_table(store)
    backup = tmp_path / "backup"
    done = seir("backup", "--out", str(output), "--to", str(backup))
    assert done.returncode == 0, done.stderr
    assert snapshot_problems(backup) == []
    record = json.loads((backup / "snapshot.json").read_text())
    assert record["latest_version"] == 1 and record["files"][0]["xxh3_128"] == file_key(store)

    later = run_job(job, output)  # a later run: version 2 and its rows
    assert later.summary["version"] == 2 and every_table(store) != original

    restored = seir("restore", "--out", str(output), "--from", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert every_table(store) == original
    assert (output / "versions" / "LATEST").read_text().strip() == "v0001"
    aside = [p for p in (output / "versions").glob("after-restore-*/v0002")]
    assert len(aside) == 1 and (aside[0] / "manifest.json").is_file()  # moved, not deleted
    assert len(list(output.glob("provenance.duckdb.before-restore-*"))) == 1
    assert seir("check", "--out", str(output)).returncode == 0

    again = run_job(job, output)  # the restored store is read whole once, then written as before
    assert again.summary["version"] == 2


def test_backup_during_a_run_is_a_consistent_store(job: Path, tmp_path: Path) -> None:
    out, backup = tmp_path / "out", tmp_path / "backup"
    run = seir_run(job, out)
    try:
        wait_for(run, "shards 1/4", timeout_s=300)
        done = seir("backup", "--out", str(out), "--to", str(backup))
    finally:
        kill_group(run)
    assert done.returncode == 0, done.stderr
    assert snapshot_problems(backup) == []
    with duckdb.connect(str(backup / "provenance.duckdb"), read_only=True) as con:
        committed = con.execute("SELECT count(*) FROM shards WHERE status = 'committed'").fetchall()[0][0]
        with_rows = con.execute("SELECT count(DISTINCT shard_id) FROM dialogues").fetchall()[0][0]
        planned = con.execute("SELECT count(*) FROM shards").fetchall()[0][0]
    assert planned == 4 and 1 <= committed == with_rows  # every committed shard whole, nothing half-committed


def test_snapshots_keep_the_newest_k(job: Path, uninterrupted: FinishedRun, output: Path, tmp_path: Path) -> None:
    assert len(list((uninterrupted.out / "snapshots").iterdir())) == 1  # the default keeps one
    spec = yaml.safe_load(job.read_text())
    spec["execution"]["snapshots"] = 2
    kept = tmp_path / "kept.yaml"
    kept.write_text(yaml.safe_dump(spec))
    for _ in range(2):
        run_job(kept, output)  # versions 2 and 3, every dialogue reused
    names = sorted(p.name for p in (output / "snapshots").iterdir())
    assert [name[:5] for name in names] == ["v0002", "v0003"]
    for name in names:
        folder = output / "snapshots" / name
        assert snapshot_problems(folder) == []
        assert json.loads((folder / "snapshot.json").read_text())["latest_version"] == int(name[1:5])

    spec["execution"]["snapshots"] = 0
    kept.write_text(yaml.safe_dump(spec))
    run_job(kept, output)
    assert sorted(p.name for p in (output / "snapshots").iterdir()) == names  # none taken, none dropped
