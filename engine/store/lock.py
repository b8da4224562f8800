"""One writer per output folder: an exclusive advisory lock that the OS releases if the process dies."""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from seir.engine.errors import SeirError


class OutputBusy(SeirError):
    pass


class OutputLock:
    FILENAME = ".seir.lock"

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / self.FILENAME
        self._handle: int | None = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 512, 0).decode(errors="replace").strip() or "another process"
            os.close(handle)
            raise OutputBusy(
                f"{self.path.parent} is being written by {holder}. Wait for it to finish, or stop it "
                "(a killed run resumes where it left off when you run the same command again)."
            ) from None
        os.ftruncate(handle, 0)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.pwrite(handle, f"seir pid {os.getpid()} on {socket.gethostname()} since {started}".encode(), 0)
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None
