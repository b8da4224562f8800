"""Faults a long run meets: a full disk wherever it strikes, and a damaged store, refused before any model loads.

The full disk is a real one: a small tmpfs this test mounts (root only; skipped with the reason elsewhere).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from seir.engine.errors import DiskFull
from seir.engine.export import ExportOptions, export
from seir.engine.store import ImageStore, ProvenanceStore, SharedCallCache, write_version
from tests.engine.conftest import FinishedRun, run_job
from tests.engine.run.test_resume import dataset, seir_run, wait_for
from tests.engine.store.conftest import seir

DISK_MB = 64


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real filesystem of DISK_MB, mounted for this test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` to the last byte (less ``leave``) with a file; removing that file makes room again."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:  # unbuffered: nothing is left to flush at close
        try:
            while True:
                handle.write(b"\0" * (1 << 16))
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial")) or ".partial-" in p.name]


def assert_one_line(stderr: str, *parts: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("seir: error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert all(part in errors[0] for part in parts), errors[0]


# -- a full disk ----------------------------------------------------------------------------------------------------
def test_disk_full_mid_run_stops_cleanly_and_resumes_to_the_same_dataset(
        job: Path, uninterrupted: FinishedRun, small_disk: Path) -> None:
    out = small_disk / "out"
    run = seir_run(job, out)
    wait_for(run, "shards 1/4", timeout_s=300)
    filler = fill(small_disk)
    assert run.stderr is not None
    stderr = run.stderr.read()
    assert run.wait(timeout=300) == 2
    assert_one_line(stderr, f"no space left in {out}", "MiB free", "while writing", "run the same command again")
    assert not leftovers(out)  # an image, a version: whole or not there
    filler.unlink()  # room again
    resumed = run_job(job, out)
    assert "resuming run" in resumed.log
    assert dataset(out) == dataset(uninterrupted.out)
    checked = seir("check", "--out", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_disk_full_in_the_store_names_it_and_loses_nothing(output: Path, small_disk: Path) -> None:
    out = small_disk / "out"
    shutil.copytree(output, out)
    before = dataset(out)
    store = ProvenanceStore(out)
    store.release_between_uses()
    filler = fill(small_disk, leave=200_000)
    with pytest.raises(DiskFull, match=r"no space left in .*while writing provenance\.duckdb"), store.transaction():
        store.con.execute("CREATE TABLE ballast AS SELECT md5(range::VARCHAR) || repeat('x', 2000) AS text "
                          "FROM range(200000)")
    store.close()
    filler.unlink()
    assert dataset(out) == before


def test_disk_full_while_writing_a_version_leaves_no_version(output: Path, small_disk: Path) -> None:
    out = small_disk / "out"
    shutil.copytree(output, out)
    with ProvenanceStore(out) as store:
        run_id, versions = store.con.execute("SELECT run_id, count(*) OVER () FROM versions").fetchall()[0]
        filler = fill(small_disk)
        with store.held(), pytest.raises(DiskFull, match=r"while writing version v0002"):
            write_version(store, out, "a-new-run", "run", "key", {}, "test")
        filler.unlink()
    assert sorted(p.name for p in (out / "versions").iterdir()) == ["LATEST", "v0001"]
    assert (out / "versions" / "LATEST").read_text().strip() == "v0001"
    assert versions == 1 and run_id


def test_disk_full_writing_an_image_or_the_call_cache_leaves_nothing_half_written(small_disk: Path) -> None:
    images = ImageStore(small_disk / "out")
    images.put(b"\x89PNG" + b"0" * 100)  # the folders exist; the next picture finds no room
    filler = fill(small_disk, leave=1000)
    with pytest.raises(DiskFull, match=r"while writing image images/"):
        images.put(b"\x89PNG" + os.urandom(200_000))
    with pytest.raises(DiskFull, match=r"while writing the call cache calls\.sqlite"):
        SharedCallCache(small_disk / "cache")
    assert not leftovers(small_disk)
    filler.unlink()


def test_disk_full_during_an_export_leaves_no_export(output: Path, small_disk: Path) -> None:
    filler = fill(small_disk, leave=8192)
    to = small_disk / "export"
    done = seir("export", "--out", str(output), "--format", "hf", "--to", str(to))
    assert done.returncode == 2
    assert_one_line(done.stderr, "no space left in", "run the same command again")
    assert not to.exists() and not leftovers(small_disk)
    filler.unlink()
    export(output, to, ExportOptions("hf"))  # room again: the same export completes
    assert (to / "manifest.json").is_file()


# -- a damaged store ------------------------------------------------------------------------------------------------
def test_a_truncated_store_is_refused_before_any_model_loads(job: Path, output: Path) -> None:
    store = output / "provenance.duckdb"
    os.truncate(store, store.stat().st_size // 2)
    done = seir("run", str(job), "--out", str(output))
    assert done.returncode == 2
    assert_one_line(done.stderr, f"{store} is damaged", "cut short", f"seir check --out {output}",
                    f"seir restore --out {output} --from {output / 'snapshots'}")
    assert "loading models" not in done.stderr and "reading seeds" not in done.stderr
    verbose = seir("run", str(job), "--out", str(output), "--verbose")
    assert "Traceback" in verbose.stderr and "is damaged" in verbose.stderr


def damage_a_block(store: Path, table: str) -> None:
    """Flip bytes inside a block that holds ``table``'s data (not a free block, which nothing reads)."""
    with duckdb.connect(str(store), read_only=True) as con:
        block, offset = con.execute(f"SELECT block_id, block_offset FROM pragma_storage_info('{table}') "
                                    "WHERE block_id >= 0 ORDER BY block_id LIMIT 1").fetchall()[0]
    position = 3 * 4096 + block * 262144 + 8 + offset
    with store.open("r+b") as handle:
        handle.seek(position)
        data = handle.read(32)
        handle.seek(position)
        handle.write(bytes(b ^ 0xFF for b in data))


def test_a_garbled_store_is_refused_before_any_model_loads(job: Path, output: Path) -> None:
    damage_a_block(output / "provenance.duckdb", "turns")
    done = seir("run", str(job), "--out", str(output))
    assert done.returncode == 2
    assert_one_line(done.stderr, "is damaged", "table turns cannot be read", "checksum", "seir check")
    assert "loading models" not in done.stderr and "reading seeds" not in done.stderr
    # a reader is refused with the same advice where its query reaches the damaged block
    query = seir("sql", "--out", str(output), "SELECT count(DISTINCT question) FROM turns")
    assert query.returncode == 2
    assert_one_line(query.stderr, "is damaged", "seir check")
    checked = seir("check", "--out", str(output))
    assert checked.returncode == 1 and "table turns cannot be read" in checked.stdout


def test_a_damaged_call_cache_is_refused_at_open(tmp_path: Path) -> None:
    cache = SharedCallCache(tmp_path / "cache")
    cache.con.executemany("INSERT INTO call_outputs VALUES (?, 'llm', 'chat', 'm', '{}', 'r', 'o', 0)",
                          [(f"key-{i}",) for i in range(5000)])
    cache.close()
    path = tmp_path / "cache" / SharedCallCache.FILENAME
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(Exception, match=r"call cache .* is damaged"):
        SharedCallCache(tmp_path / "cache")
