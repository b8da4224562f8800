"""``seir check``: is an output whole? Every table read back, every image hashed against its key, every version's
files against its manifest, the call caches its runs used and its snapshots against their records.

It reads only; each problem is named with the file and what is wrong, and the command exits non-zero on any.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import duckdb

from seir.engine.keys import file_key
from seir.engine.progress import Meter
from seir.engine.store.base import StoreError, pages
from seir.engine.store.call_cache import SharedCallCache
from seir.engine.store.connect import open_reader
from seir.engine.store.images import ImageStore
from seir.engine.store.integrity import (
    DamagedStore,
    check_opened,
    read_every_block,
    snapshot_folders,
    user_tables,
)
from seir.engine.store.provenance import ProvenanceStore
from seir.engine.store.snapshots import snapshot_problems
from seir.engine.store.versions import MANIFEST, read_manifest, version_name

IMAGE_PAGE = 4096
# Every picture the store names: renders, the user's pictures in seeds, and what each call was shown.
_IMAGE_KEYS = """
    SELECT image_key FROM images UNION SELECT image_key FROM drafts WHERE image_key IS NOT NULL
    UNION SELECT image_key FROM turns WHERE image_key IS NOT NULL UNION SELECT image_key FROM call_images
    UNION SELECT unnest(images) FROM seeds"""


PROBLEMS_SHOWN = 200  # a badly damaged output lists its first problems and counts the rest: memory stays bounded


@dataclass
class CheckReport:
    checked: list[str] = field(default_factory=list)  # one line per part: what was read and found whole
    problems: list[str] = field(default_factory=list)  # the first PROBLEMS_SHOWN
    problem_count: int = 0
    notes: list[str] = field(default_factory=list)  # worth knowing, not wrong (e.g. leftovers of a stopped write)

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < PROBLEMS_SHOWN:
            self.problems.append(text)

    def text(self) -> str:
        lines = [f"  {line}" for line in self.checked] + [f"  note: {note}" for note in self.notes]
        if self.problem_count:
            lines.append(f"check: {self.problem_count} problem{'s' * (self.problem_count > 1)}:")
            lines += [f"  - {problem}" for problem in self.problems]
            if self.problem_count > len(self.problems):
                lines.append(f"  - ... and {self.problem_count - len(self.problems)} more")
        else:
            lines.append("check: OK")
        return "\n".join(lines)


def check_output(out_dir: Path, caches: list[Path], stream: TextIO) -> CheckReport:
    report = CheckReport()
    path = out_dir / ProvenanceStore.FILENAME
    try:
        con = open_reader(path, out_dir)
    except StoreError as err:
        report.problem(str(err))
        con = None
    if con is not None:
        try:
            if _check_tables(con, path, report, stream):
                _check_images(con, out_dir, report, stream)
                _check_versions(con, out_dir, report)
                caches = caches + _recorded_caches(con)
            else:
                report.notes.append("images, versions and call caches were not checked: they are read from the "
                                    "store, which cannot be read whole")
        finally:
            con.close()
    for cache in dict.fromkeys(c.absolute() for c in caches):
        _check_cache(cache, report)
    _check_snapshots(out_dir, report)
    _note_leftovers(out_dir, report)
    return report


def _check_tables(con: duckdb.DuckDBPyConnection, path: Path, report: CheckReport, stream: TextIO) -> bool:
    """Every table read whole; returns whether all were."""
    started, rows = time.monotonic(), 0
    try:
        check_opened(con, path, every_block_list=True)
    except DamagedStore as err:
        report.problem(str(err))
        return False
    tables = user_tables(con)
    with Meter(f"reading {path.name}", len(tables), "tables", stream) as meter:
        def counted(_: str, n: int) -> None:
            nonlocal rows
            rows += n
            meter.advance(1)

        failed = read_every_block(con, counted)
    for table, why in failed.items():
        report.problem(f"{path}: table {table} cannot be read: {why}")
    version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()[0][0]
    report.checked.append(f"{path.name}: schema v{version}, {len(tables) - len(failed)} of {len(tables)} tables "
                          f"read whole ({rows:,} rows, {time.monotonic() - started:.1f} s)")
    return not failed


def _check_images(con: duckdb.DuckDBPyConnection, out_dir: Path, report: CheckReport, stream: TextIO) -> None:
    images = ImageStore(out_dir)
    total = con.execute(f"SELECT count(*) FROM ({_IMAGE_KEYS})").fetchall()[0][0]
    bad = 0
    with Meter("hashing images", total, "images", stream) as meter:
        for page in pages(con, _IMAGE_KEYS, "image_key", IMAGE_PAGE):
            for key in page.column(0).to_pylist():
                problem = _image_problem(images, key)
                if problem is not None:
                    bad += 1
                    report.problem(problem)
            meter.advance(page.num_rows)
    report.checked.append(f"images: {total - bad} of {total} present and hashing to their keys")


def _image_problem(images: ImageStore, key: str) -> str | None:
    path = images.path(key)
    if not path.is_file():
        return f"{path}: missing (the store names image {key})"
    found = file_key(path)
    if found != key:
        return f"{path}: its content hashes to {found}, not its key (changed after it was written)"
    return None


def _check_versions(con: duckdb.DuckDBPyConnection, out_dir: Path, report: CheckReport) -> None:
    rows = con.execute("SELECT version, n_dialogues FROM versions ORDER BY version").fetchall()
    broken = 0
    for number, accepted in rows:
        found = list(_version_problems(out_dir / "versions" / version_name(number), accepted, report))
        broken += bool(found)
        for problem in found:
            report.problem(problem)
    latest_file = out_dir / "versions" / "LATEST"
    if rows:
        named = latest_file.read_text(encoding="utf-8").strip() if latest_file.is_file() else None
        if named != version_name(rows[-1][0]):
            report.problem(f"{latest_file}: names {named or 'nothing'}, the store's newest version is "
                                   f"{version_name(rows[-1][0])}")
    report.checked.append(f"versions: {len(rows) - broken} of {len(rows)} whole, every file matching its manifest")


def _version_problems(folder: Path, accepted: int, report: CheckReport) -> Iterator[str]:
    manifest_path = folder / MANIFEST
    try:
        manifest, listed = read_manifest(manifest_path)
    except (OSError, ValueError) as err:
        yield f"{manifest_path}: unreadable ({type(err).__name__}: {err})"
        return
    if listed != accepted:
        yield f"{manifest_path}: lists {listed} dialogues, the store recorded {accepted}"
    files: list[dict[str, Any]] = manifest.get("files", [])
    if not files:
        report.notes.append(f"{manifest_path}: written before manifests listed their files' keys; its row "
                            "counts were checked")
    for entry in files:
        path = folder / entry["path"]
        if not path.is_file():
            yield f"{path}: missing (listed in {MANIFEST})"
        elif path.stat().st_size != entry["bytes"] or file_key(path) != entry["xxh3_128"]:
            yield f"{path}: does not match {MANIFEST} (changed after it was written)"
    accepted_file = folder / "accepted.parquet"
    if accepted_file.is_file():
        try:
            rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{_quoted(accepted_file)}')").fetchall()[0][0]
        except duckdb.Error as err:
            yield f"{accepted_file}: unreadable ({str(err).splitlines()[0]})"
            return
        if rows != accepted:
            yield f"{accepted_file}: {rows} rows, the store recorded {accepted} accepted dialogues"
    elif not files:
        yield f"{accepted_file}: missing"


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def _recorded_caches(con: duckdb.DuckDBPyConnection) -> list[Path]:
    """The shared call caches this output's runs named (execution.cache; --cache is not recorded)."""
    rows = con.execute("SELECT DISTINCT json_extract_string(job_spec, '$.execution.cache') FROM runs").fetchall()
    return [Path(row[0]) for row in rows if row[0]]


def _check_cache(folder: Path, report: CheckReport) -> None:
    path = folder / SharedCallCache.FILENAME
    if not path.is_file():
        report.problem(f"{path}: missing (a run of this output used it as its call cache)")
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as cache:
            verdict = [row[0] for row in cache.execute("PRAGMA integrity_check")]
            if verdict != ["ok"]:
                for line in verdict:
                    report.problem(f"{path}: {line}")
                return
            answers, renders = cache.execute(
                "SELECT count(*), count(*) FILTER (WHERE method = 'render') FROM call_outputs").fetchall()[0]
            images, bad = ImageStore(folder), 0
            for (output,) in cache.execute("SELECT output FROM call_outputs WHERE method = 'render'"):  # streamed
                problem = _image_problem(images, json.loads(output)["image_key"])
                if problem is not None:
                    bad += 1
                    report.problem(problem)
    except sqlite3.DatabaseError as err:
        report.problem(f"{path}: unreadable ({err})")
        return
    report.checked.append(f"call cache {folder}: {answers:,} answers readable, {renders - bad} of {renders} "
                          "rendered images whole")


def _check_snapshots(out_dir: Path, report: CheckReport) -> None:
    folders = snapshot_folders(out_dir)
    if not folders:
        report.checked.append("snapshots: none (execution.snapshots keeps some; `seir backup` makes one)")
        return
    problems = [problem for folder in folders for problem in snapshot_problems(folder)]
    for problem in problems:
        report.problem(problem)
    report.checked.append(f"snapshots: {len(folders)}, newest {folders[-1].name}"
                          + ("" if problems else ", each matching its record"))


def _note_leftovers(out_dir: Path, report: CheckReport) -> None:
    """Temp files of a write that was stopped (killed, a full disk): never read, safe to delete."""
    leftovers = [p for pattern in ("images/*/.*.tmp", "versions/.*.partial", "snapshots/.*.partial", ".*.tmp")
                 for p in out_dir.glob(pattern)]
    if leftovers:
        report.notes.append(f"{len(leftovers)} leftovers of a stopped write (never read, safe to delete), e.g. "
                            f"{leftovers[0]}")
