"""Snapshots of the provenance store: a consistent copy taken between two units of work, and bringing one back.

The store is the one part of an output that cannot be made again cheaply (images are content-addressed and never
change; versions are frozen folders). A snapshot copies the DuckDB file (and its write-ahead log, if a killed writer
left one) while a read-only connection holds it, so no writer commits during the copy: a running seir waits for
the copy at its next commit. ``snapshot.json`` records each file's size and content key, which a restore verifies.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from seir.engine.errors import writing
from seir.engine.keys import file_key
from seir.engine.store.base import StoreError, now
from seir.engine.store.connect import open_reader
from seir.engine.store.files import folder_whole, write_whole
from seir.engine.store.integrity import SNAPSHOT_RECORD, SNAPSHOTS, snapshot_folders
from seir.engine.store.lock import OutputLock
from seir.engine.store.provenance import ProvenanceStore
from seir.engine.store.schema import SCHEMA_VERSION
from seir.engine.store.versions import version_name

_STORE_FILES = (ProvenanceStore.FILENAME, ProvenanceStore.FILENAME + ".wal")
_CHUNK = 1 << 23


@dataclass(frozen=True)
class Snapshot:
    folder: Path
    bytes: int
    seconds: float
    version: int | None  # the newest dataset version the store records


def take_snapshot(out_dir: Path, to: Path) -> Snapshot:
    """Copy ``out_dir``'s store into the new folder ``to``; it appears whole or not at all."""
    started = time.monotonic()
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise StoreError(f"{to} exists and is not an empty folder: snapshot into a new folder")
    con = open_reader(out_dir / ProvenanceStore.FILENAME, out_dir)  # held until the copy is whole: writers wait
    try:
        version = con.execute("SELECT max(version) FROM versions").fetchall()[0][0]
        with (writing(to.parent, f"the snapshot {to.name}"),
              folder_whole(to, to.with_name(f".{to.name}.partial")) as partial):
            files = [_copy(out_dir / name, partial / name) for name in _STORE_FILES if (out_dir / name).exists()]
            record = {"source": str(out_dir.absolute()), "created_at": now().isoformat(),
                      "schema_version": SCHEMA_VERSION, "latest_version": version, "files": files}
            (partial / SNAPSHOT_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    finally:
        con.close()
    return Snapshot(to, sum(f["bytes"] for f in files), time.monotonic() - started, version)


def _copy(source: Path, target: Path) -> dict[str, Any]:
    """``source`` to ``target``, hashed as it is read and flushed to disk before it counts; returns its record."""
    digest, size = xxhash.xxh3_128(), 0
    buffer = bytearray(_CHUNK)  # one buffer read into again and again: no allocation per chunk
    with open(source, "rb", buffering=0) as reader, open(target, "wb", buffering=0) as writer:
        while read := reader.readinto(buffer):
            chunk = memoryview(buffer)[:read]
            digest.update(chunk)
            while chunk:  # a raw write may take part of a chunk
                chunk = chunk[writer.write(chunk):]
            size += read
        os.fsync(writer.fileno())
    return {"path": target.name, "bytes": size, "xxh3_128": digest.hexdigest()}


def snapshot_problems(folder: Path) -> list[str]:
    """What in a snapshot folder does not match its record (empty when it is whole)."""
    try:
        record = json.loads((folder / SNAPSHOT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return [f"{folder / SNAPSHOT_RECORD}: unreadable ({err})"]
    return [problem for entry in record.get("files", []) for problem in _file_problems(folder, entry)]


def _file_problems(folder: Path, entry: dict[str, Any]) -> Iterator[str]:
    path = folder / entry["path"]
    if not path.is_file():
        yield f"{path}: missing"
    elif path.stat().st_size != entry["bytes"]:
        yield f"{path}: {path.stat().st_size:,} bytes, its record says {entry['bytes']:,}"
    elif file_key(path) != entry["xxh3_128"]:
        yield f"{path}: its content does not hash to its recorded key (changed since it was written)"


def restore_snapshot(out_dir: Path, source: Path) -> list[str]:
    """Bring the store in ``source`` (a snapshot or backup folder) back into ``out_dir``; returns what was done. Each
    file is copied beside its place and checked against the snapshot's record as it is read; only then is the store
    it replaces moved aside (kept, with its write-ahead log) and the copies renamed into place. Version folders the
    restored store does not know are moved aside too, so nothing is deleted."""
    try:
        record = json.loads((source / SNAPSHOT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StoreError(f"{source} is not a snapshot: {source / SNAPSHOT_RECORD} is unreadable ({err})") from None
    done: list[str] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with OutputLock(out_dir), writing(out_dir, f"the store restored from {source}"):
        copies = []
        try:
            for entry in record["files"]:
                partial = out_dir / f".{entry['path']}.restoring"
                copies.append((partial, out_dir / entry["path"]))
                copied = _copy(source / entry["path"], partial)
                if (copied["bytes"], copied["xxh3_128"]) != (entry["bytes"], entry["xxh3_128"]):
                    raise StoreError(f"{source / entry['path']} does not match its snapshot's record (changed after "
                                     "it was taken). Nothing was changed: restore another snapshot or backup.")
        except BaseException:
            for partial, _ in copies:
                partial.unlink(missing_ok=True)
            raise
        for name in _STORE_FILES:  # a write-ahead log left beside the old file must not be replayed onto the new one
            current = out_dir / name
            if current.exists():
                aside = current.with_name(f"{name}.before-restore-{stamp}")
                current.rename(aside)
                done.append(f"kept the replaced {name} as {aside.name}")
        for partial, target in copies:
            partial.rename(target)
        done.append(f"restored {ProvenanceStore.FILENAME} from {source} (taken {record['created_at']})")
        done += _align_versions(out_dir, stamp)
    return done


def _align_versions(out_dir: Path, stamp: str) -> list[str]:
    """Version folders written after the snapshot move aside; ``LATEST`` names the restored store's newest."""
    con = open_reader(out_dir / ProvenanceStore.FILENAME, out_dir)
    try:
        known = {row[0] for row in con.execute("SELECT version FROM versions").fetchall()}
    finally:
        con.close()
    versions = out_dir / "versions"
    done = []
    later = sorted(p for p in versions.glob("v[0-9]*") if p.is_dir() and int(p.name[1:]) not in known)
    if later:
        aside = versions / f"after-restore-{stamp}"
        aside.mkdir(parents=True)
        for folder in later:
            folder.rename(aside / folder.name)
        done.append(f"moved {', '.join(p.name for p in later)} (written after the snapshot) to {aside}")
    if known:
        write_whole(versions / "LATEST", version_name(max(known)) + "\n")
    elif (versions / "LATEST").exists():
        (versions / "LATEST").unlink()
    return done


def keep_snapshots(out_dir: Path, label: str, keep: int) -> Snapshot | None:
    """Take ``OUT/snapshots/LABEL`` and drop all but the newest ``keep`` (none taken when ``keep`` is 0)."""
    if keep < 1:
        return None
    snapshot = take_snapshot(out_dir, out_dir / SNAPSHOTS / label)
    for old in snapshot_folders(out_dir)[:-keep]:
        shutil.rmtree(old)
    return snapshot
