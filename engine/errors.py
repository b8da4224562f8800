"""Errors a user can act on: the CLI prints their message alone, without a traceback."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class SeirError(Exception):
    pass


class DiskFull(SeirError):
    """A write found no room. What was committed before it stays whole; the same command goes on from there."""


# How the libraries seir writes through say "no room": the OS's errno, DuckDB's and Arrow's message text, SQLite's,
# and DuckDB's when its spill files (bounded by the free space of their disk) cannot grow.
_NO_ROOM_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_NO_ROOM_TEXT = ("no space left on device", "disk quota exceeded", "database or disk is full",
                 "set by the 'max_temp_directory_size' setting")


def _in_chain(err: BaseException | None, found: Callable[[BaseException], bool]) -> bool:
    """Whether ``err`` or an exception it was raised from (or during) is ``found``."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if found(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def is_disk_full(err: BaseException | None) -> bool:
    """Whether ``err`` or an exception it was raised from (or during) is a full disk."""
    return _in_chain(err, lambda e: (isinstance(e, OSError) and e.errno in _NO_ROOM_ERRNOS)
                     or any(text in str(e).lower() for text in _NO_ROOM_TEXT))


def is_out_of_memory(err: BaseException | None) -> bool:
    """Whether ``err`` (or one it was raised from) is DuckDB running out of its memory cap."""
    return _in_chain(err, lambda e: type(e).__name__ == "OutOfMemoryException"
                     or str(e).startswith("Out of Memory Error"))


def free_space(folder: Path) -> str:
    """The free space of the filesystem holding ``folder`` (or its nearest existing parent), for a message."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:.1f} MiB free"


def disk_full(folder: Path, what: str) -> DiskFull:
    return DiskFull(f"no space left in {folder} ({free_space(folder)}) while writing {what}. Nothing committed is "
                    "lost and nothing was left half-written: make room (or move the folder to a larger disk) and "
                    "run the same command again to go on from there.")


@contextmanager
def writing(folder: Path, what: str) -> Iterator[None]:
    """A full disk inside this scope becomes one ``DiskFull`` naming ``folder`` and ``what`` was being written."""
    try:
        yield
    except DiskFull:
        raise
    except BaseException as err:
        if is_disk_full(err):
            raise disk_full(folder, what) from err
        raise
