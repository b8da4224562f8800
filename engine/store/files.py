"""Files and folders that appear whole or not at all: written beside their place, then renamed into it. A write
stopped half-way (killed, a full disk) leaves nothing where a reader looks, and removes what it wrote beside it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_whole(target: Path, data: bytes | str) -> None:
    """``data`` at ``target`` whole or not at all: written beside it, then renamed over it; a failed write (a full
    disk) leaves neither a partial file nor its temp file."""
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, str):
            temp.write_text(data, encoding="utf-8")
        else:
            temp.write_bytes(data)
        temp.replace(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextmanager
def folder_whole(target: Path, partial: Path, replace: bool = False) -> Iterator[Path]:
    """Yields ``partial`` (a fresh folder) to fill; when the block ends it is renamed to ``target``, which may exist
    empty, or with anything in it when ``replace``. If the block raises, ``partial`` is removed."""
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        if replace and target.exists():
            shutil.rmtree(target)
        elif target.exists():
            target.rmdir()
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
